"""DOT: Zhao, Cui, Song, Liang, "DOT: A Distillation-Oriented Trainer", ICCV 2023 (arXiv:2307.08436);
reference megvii-research/mdistiller (``mdistiller/engine/dot.py``, the ``DOT`` trainer in ``trainer.py``).

SGD with two momentum buffers per parameter: one accumulates the task loss's gradient (momentum
``m - delta``), the other the distillation loss's (``m + delta``), so the distillation direction carries
more history and the task loss's noise less. Each step therefore takes the two gradients apart: the
distillation loss is back-propagated first (its gradients recorded by :meth:`step_kd`), then the task loss,
and :meth:`step` applies both buffers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from helper.distributed import DistInfo, gradient_averager
from helper.errors import UserError


def dot_momenta(momentum: float, delta: float) -> tuple[float, float]:
    """(task momentum, distillation momentum) = (m - delta, m + delta), as mdistiller's DOT trainer."""
    return momentum - delta, momentum + delta


class DistillationOrientedTrainer(torch.optim.Optimizer):
    """mdistiller's DOT optimizer (same name, constructor and ``step_kd``/``step`` protocol), one param group.

    For a parameter with both gradients: task buffer ``b <- momentum * b + (g_task + wd * p)``, distillation
    buffer ``b_kd <- momentum_kd * b_kd + g_kd``, then ``p <- p - lr * b`` and ``p <- p - lr * b_kd``. A
    parameter reached by one loss only uses that buffer with the mean momentum and takes the weight decay
    there. A buffer starts as its first gradient; as in the reference, a distillation-only parameter's first
    buffer holds its gradient without the weight decay. The buffers are the per-parameter state
    ('momentum_buffer', 'momentum_kd_buffer'), so they are saved and restored with ``state_dict()``.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, momentum_kd: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0):
        for name, value in (("lr", lr), ("momentum", momentum), ("momentum_kd", momentum_kd),
                            ("weight_decay", weight_decay)):
            if value < 0.0:
                raise ValueError(f"DOT's {name} must not be negative, got {value}")
        defaults = dict(lr=lr, momentum=momentum, momentum_kd=momentum_kd, dampening=dampening,
                        weight_decay=weight_decay)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("DOT takes one parameter group, as mdistiller's")
        self._kd_grads: dict[Tensor, Tensor] = {}  # between step_kd and step: parameter -> its distillation grad

    def load_state_dict(self, state_dict: dict) -> None:
        if any("momentum_kd" not in group for group in state_dict["param_groups"]):
            raise UserError("this checkpoint's optimizer is not DOT's: resume it with the --optimizer it was "
                            "trained with")
        super().load_state_dict(state_dict)

    @torch.no_grad()
    def step_kd(self) -> None:
        """Record the gradients now held (the distillation loss's); the caller then zeroes them."""
        self._kd_grads = {p: p.grad for p in self.param_groups[0]["params"] if p.grad is not None}

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Apply the task gradients now held and the distillation gradients :meth:`step_kd` recorded."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        group = self.param_groups[0]
        lr, wd, damp = group["lr"], group["weight_decay"], group["dampening"]
        mom_task, mom_kd = group["momentum"], group["momentum_kd"]
        mom_one = (mom_task + mom_kd) / 2.0  # a parameter only one of the losses reached
        kd_grads, self._kd_grads = self._kd_grads, {}
        task = [p for p in group["params"] if p.grad is not None]
        for p in task:
            d_p = p.grad.add(p, alpha=wd) if wd != 0 else p.grad
            if mom_task != 0:
                d_p = self._accumulate(p, "momentum_buffer", d_p, mom_task if p in kd_grads else mom_one, damp)
            p.add_(d_p, alpha=-lr)
        has_task = set(task)
        for p, g_kd in kd_grads.items():
            if p not in has_task and wd != 0 and "momentum_kd_buffer" in self.state[p]:
                g_kd = g_kd.add(p, alpha=wd)
            buf = self._accumulate(p, "momentum_kd_buffer", g_kd, mom_kd if p in has_task else mom_one, damp)
            p.add_(buf, alpha=-lr)
        return loss

    def _accumulate(self, p: Tensor, key: str, grad: Tensor, momentum: float, dampening: float) -> Tensor:
        """``buf <- momentum * buf + (1 - dampening) * grad``; the first call stores a copy of ``grad``."""
        state = self.state[p]
        if key not in state:
            state[key] = grad.detach().clone()
        else:
            state[key].mul_(momentum).add_(grad, alpha=1.0 - dampening)
        return state[key]


def task_and_distill_step(objective, optimizer: DistillationOrientedTrainer, info: DistInfo,
                          after_backward: Callable[[], None] | None) -> Callable[[dict[str, Tensor], Tensor], None]:
    """DOT's step on a distillation objective: the distillation loss back-propagated first (its graph kept)
    and recorded, then the task loss, then the update (mdistiller's ``DOT.train_iter``).

    Under DistributedDataParallel the student's gradients are reduced by DDP once per forward, in the
    first pass; the second pass's are averaged here (a method's modules outside DDP are averaged by
    ``after_backward`` after each pass).
    """
    student = objective.student
    second_pass = gradient_averager(list(student.parameters()), info) \
        if isinstance(student, DistributedDataParallel) else None

    def step(terms: dict[str, Tensor], total: Tensor) -> None:
        task, distill = objective.task_and_distill(terms)
        optimizer.zero_grad(set_to_none=True)
        distill.backward(retain_graph=True)
        if after_backward is not None:
            after_backward()
        optimizer.step_kd()
        optimizer.zero_grad(set_to_none=True)
        task.backward()
        if second_pass is not None:
            second_pass()
        if after_backward is not None:
            after_backward()
        optimizer.step()

    return step
