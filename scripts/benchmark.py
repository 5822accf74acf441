"""Steady-state training throughput of train_student's step, and how close it runs to the hardware.

    python scripts/benchmark.py                      # all pairs, 30 timed steps after 5 warm-up steps
    python scripts/benchmark.py --pairs kd:resnet32x4:resnet8x4 --steps 50 --device cuda
    python scripts/benchmark.py --configs fast,eager,fp32,fp32-eager,reference
    python scripts/benchmark.py --repeats 3          # configurations interleaved, medians reported
    python scripts/benchmark.py --peak 230,1900      # skip measuring the matmul peaks (GFLOP/s fp32,bf16)
    OMP_NUM_THREADS=1 python scripts/benchmark.py --pairs kd:resnet20:resnet8 --parts fp32,bf16  # parts apart

Each measurement builds its pieces with train_student's own functions (options, runtime, data, method,
compile decision, loader, placement, stages) and times helper.engine.train_epoch, so it measures the code
path a run takes; only the teacher is random instead of loaded. The clock runs over ``--steps`` steps after
``--warmup`` ones (start-up, worker spawn, compiling and warm-up excluded), data loading included. The data
set is synthetic, CIFAR-100-shaped and of CIFAR-100's size, so CRD's memory bank (n_data 50,000,
nce_k 16,384) is the real one, and ``--compile auto`` sees RepDistiller's 240 epochs.

Beside images/s it reports the work of a step (teacher forward, student forward and backward, the method),
counted with torch.utils.flop_counter on one eager fp32 step, per image; the achieved GFLOP/s; and that as
a share of this machine's matmul peak in the configuration's precision (a 2048x2048 matmul loop, measured
at start-up), the ceiling no configuration of the same work can pass. Not a test: results depend on the
machine; docs/benchmark.md has ours.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import platform
import statistics
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset import build_data  # noqa: E402
from helper.compile import compile_module, plan_compile  # noqa: E402
from helper.engine import EpochTotals, StepVerdict, to_device, train_epoch  # noqa: E402
from helper.precision import DTYPES, cpu_has_fast_bf16, resolve_device  # noqa: E402
from helper.runlog import Progress  # noqa: E402
from helper.setup import Runtime, build_train_loader, setup_runtime  # noqa: E402
from helper.teacher import fold_batchnorms  # noqa: E402
from helper.trainer import Stage  # noqa: E402
from models import build_model  # noqa: E402
from train_student import build_method, make_stages, parse_option, place_networks, planned_steps  # noqa: E402

PAIRS = ("kd:resnet32x4:resnet8x4", "crd:resnet32x4:resnet8x4", "kd:wrn_40_2:wrn_16_2")
FAST = ["--precision", "auto", "--channels_last", "--loader", "memory"]
CONFIGS = {
    "fast": FAST,  # the default: --compile auto compiles a 240-epoch run, during the warm-up steps
    "eager": [*FAST, "--compile", "off"],
    "compiled": [*FAST, "--compile", "on"],
    # what --precision auto picks on a CPU without bf16 hardware (AVX2 alone), with and without compiling
    "fp32": ["--precision", "fp32", "--channels_last", "--loader", "memory"],
    "fp32-eager": ["--precision", "fp32", "--channels_last", "--loader", "memory", "--compile", "off"],
    "fp32-nchw": ["--precision", "fp32", "--no-channels_last", "--loader", "memory"],
    "reference": ["--precision", "fp32", "--no-channels_last", "--loader", "torchvision", "--num_workers", "2",
                  "--no-fold_teacher_bn", "--compile", "off"],
}
DATA = ["--dataset", "synthetic", "--syn_classes", "100", "--syn_val_size", "100", "--batch_size", "64", "--seed", "0"]


def data_args(args: argparse.Namespace) -> list[str]:
    return [*DATA, "--syn_train_size", str(args.images)]


@dataclass
class Result:
    pair: str
    config: str
    precision: str
    compiled: bool
    images_per_s: float
    peak_mib: float
    worker_peak_mib: float


@dataclass
class Run:
    """One pair in one configuration, built as train_student.main builds it (random teacher)."""

    opt: argparse.Namespace
    rt: Runtime
    stage: Stage
    loader: object


class Clocked:
    """The first ``warmup + steps`` batches of a loader; clocks the ``steps`` after the warm-up ones.

    The clock starts when the first timed step asks for its batch and stops when the step after
    the last asks for its own, so it covers exactly ``steps`` batch fetches and ``steps`` steps.
    """

    def __init__(self, loader: Iterable, warmup: int, steps: int, device: torch.device):
        self.loader, self.warmup, self.steps, self.device = loader, warmup, steps, device
        self.seconds = 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def __iter__(self) -> Iterator:
        for number, batch in enumerate(self.loader):
            if number == self.warmup:
                start = self._now()
            if number == self.warmup + self.steps:
                self.seconds = self._now() - start
                return
            yield batch
        raise RuntimeError(f"the loader ran out before {self.warmup + self.steps + 1} batches")


def reset_peak(device: torch.device) -> None:
    """Start a new peak: the device allocator's on a GPU, this process's RSS high-water mark (Linux)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")


def hwm_mib(pid: int | str = "self") -> float:
    """A process's peak resident set size since the last reset (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children_hwm_mib() -> float:
    """The largest peak RSS among this process's live children (the loader's workers); 0 without any."""
    pids = [pid for task in Path("/proc/self/task").iterdir() for pid in (task / "children").read_text().split()]
    return max((hwm_mib(pid) for pid in pids), default=0.0)


def peak_mib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else hwm_mib()


def build_run(pair: str, config: list[str], bundle, args: argparse.Namespace, quiet: bool = False) -> Run:
    method_name, teacher_arch, student_arch = pair.split(":")
    argv = ["--path_t", "random", "--model_t", teacher_arch, "--model_s", student_arch, "--distill", method_name,
            "--device", args.device, *data_args(args), *config]
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        opt, spec = parse_option(argv)
        rt = setup_runtime(opt)
        reset_peak(rt.device)
        teacher = build_model(opt.model_t, bundle.num_classes)
        student = build_model(opt.model_s, bundle.num_classes)
        method = build_method(spec, student, teacher, opt, bundle)
        loader = build_train_loader(opt, bundle, "crd" if spec.wants_contrast(opt) else "instance", rt)
        plan_compile(opt, rt, planned_steps(opt, method, student, loader), spec)
        teacher, student, method = place_networks(opt, spec, teacher, student, method, rt)
        stage = make_stages(opt, spec, student, student, teacher, method, rt)[-1]
    loader.set_position(1, 0)
    return Run(opt, rt, stage, loader)


def measure(pair: str, config: str, bundle, args: argparse.Namespace) -> Result:
    """Images per second over the timed steps, and the memory's high-water mark."""
    run = build_run(pair, CONFIGS[config], bundle, args)
    rt = run.rt
    clocked = Clocked(run.loader, args.warmup, args.steps, rt.device)
    train_epoch(run.stage.objective, clocked, run.stage.optimizer, rt.grad_scaler(), rt.device, rt.channels_last,
                EpochTotals(), 0, Progress("", len(run.loader), 10**9, enabled=False), str, "", StepVerdict(rt.info))
    workers = children_hwm_mib() if rt.device.type == "cpu" else 0.0
    result = Result(pair, config, rt.precision, rt.compile, args.steps * run.opt.batch_size / clocked.seconds,
                    peak_mib(rt.device), workers)
    del run, clocked
    gc.collect()  # the workers go before the next measurement starts
    return result


def step_gflop_per_image(pair: str, bundle, args: argparse.Namespace) -> float:
    """The floating-point work of one training step per image: the teacher's forward, the student's forward
    and backward and the method's own, as torch.utils.flop_counter counts them (convolutions and matrix
    products; the elementwise passes are not counted) on one eager fp32 step."""
    run = build_run(pair, CONFIGS["fp32-eager"], bundle, args, quiet=True)
    objective = run.stage.objective
    objective.train_mode()
    batch = to_device(next(iter(run.loader)), run.rt.device, run.rt.channels_last)
    with FlopCounterMode(display=False) as counter:
        _, _, total = objective(batch)
        total.backward()
    return counter.get_total_flops() / batch[1].shape[0] / 1e9


def rate_gflops(call, flop: float, device: torch.device, seconds: float = 2.0) -> float:
    """GFLOP/s of ``call`` (``flop`` per call) run back to back for ``seconds`` after three warm-up calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    for _ in range(3):
        call()
    sync()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        calls += 1
        if calls % 4 == 0:
            sync()
    sync()
    return flop * calls / (time.perf_counter() - start) / 1e9


def matmul_gflops(dtype: torch.dtype, device: torch.device, n: int = 2048) -> float:
    """The best rate of n x n x n products, as a matmul (BLAS: MKL's on x86 CPUs) and as a 1x1 convolution
    over n pixels (oneDNN's on CPUs, the library every convolution here runs on; on some CPUs, AMD's among
    them, it outruns MKL): the most this machine's libraries get out of it, a ceiling for any network."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    x = a.t().reshape(1, n, 32, n // 32).contiguous(memory_format=torch.channels_last)
    w = b.reshape(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return max(rate_gflops(lambda: torch.mm(a, b), 2 * n**3, device),
                   rate_gflops(lambda: torch.nn.functional.conv2d(x, w), 2 * n**3, device))


def peaks(device: torch.device, given: str | None) -> dict[str, float]:
    """Matmul peaks in GFLOP/s by precision: fp32, and bf16 where the hardware runs it (fp16 on GPUs)."""
    if given:
        values = [float(v) for v in given.split(",")]
        return dict(zip(("fp32", "bf16"), values, strict=False))
    found = {"fp32": matmul_gflops(torch.float32, device)}
    if device.type == "cuda" or cpu_has_fast_bf16():
        found["bf16"] = matmul_gflops(torch.bfloat16, device)
    if device.type == "cuda":
        found["fp16"] = matmul_gflops(torch.float16, device)
    return found


def time_parts(pair: str, precision: str, calls: int, device: torch.device) -> None:
    """The step's two network parts apart, eager and compiled: the frozen teacher's forward and the
    student's forward and backward (CE), batch 64 at 32x32, channels_last. Calls are interleaved and
    each part reports its fastest wall time and its median process CPU time, which a machine shared with
    other work inflates far less than wall time (one thread: ``OMP_NUM_THREADS=1``)."""
    _, teacher_arch, student_arch = pair.split(":")
    autocast = torch.autocast(device.type, DTYPES[precision]) if precision in DTYPES else contextlib.nullcontext()
    x = torch.randn(64, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (64,), device=device)
    torch.manual_seed(0)
    teacher_state = build_model(teacher_arch, 100).state_dict()
    student_state = build_model(student_arch, 100).state_dict()

    def teacher(compiled: bool) -> nn.Module:
        net = build_model(teacher_arch, 100)
        net.load_state_dict(teacher_state)
        net = fold_batchnorms(net.eval().requires_grad_(False), preact=False)
        net = net.to(device, memory_format=torch.channels_last)
        if compiled:
            compile_module(net, "the teacher")
        return net

    def student(compiled: bool) -> nn.Module:
        net = build_model(student_arch, 100)
        net.load_state_dict(student_state)
        net = net.to(device, memory_format=torch.channels_last).train()
        if compiled:
            compile_module(net, "the student")
        return net

    def forward(net: nn.Module) -> None:
        with torch.inference_mode(), autocast:
            net(x, True, False)

    def forward_backward(net: nn.Module) -> None:
        with autocast:
            logits = net(x)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()

    parts = {(name, kind): (build(kind == "compiled"), call) for name, build, call in
             (("teacher forward", teacher, forward), ("student forward+backward", student, forward_backward))
             for kind in ("eager", "compiled")}
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    for net, call in parts.values():  # compiles
        call(net)
        call(net)
    wall: dict = {}
    cpu: dict = {}
    for _ in range(calls):
        for key, (net, call) in parts.items():
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            call(net)
            sync()
            wall.setdefault(key, []).append(time.perf_counter() - start)
            cpu.setdefault(key, []).append(time.process_time() - start_cpu)
    print(f"\n{pair} {precision}, {torch.get_num_threads()} threads, {calls} calls each:")
    for key in parts:
        print(f"  {key[0]:26} {key[1]:9} fastest {1000 * min(wall[key]):7.1f} ms   "
              f"median CPU {1000 * statistics.median(cpu[key]):7.1f} ms")


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return (f"{model}, {torch.get_num_threads()} threads, AMX {'yes' if amx else 'no'}, "
            f"torch {torch.__version__}")


def report(results: list[Result], device: torch.device, work: dict[str, float], peak: dict[str, float]) -> None:
    memory = "peak GPU memory" if device.type == "cuda" else "peak RSS (main; largest worker)"
    print(f"\n{'pair':28} {'config':10} {'precision':9} {'compiled':8} {'images/s':>9} {'GFLOP/s':>8} "
          f"{'of peak':>8}  {memory}")
    for r in results:
        workers = f"; {r.worker_peak_mib:.0f}" if r.worker_peak_mib else ""
        achieved = r.images_per_s * work[r.pair]
        share = f"{100 * achieved / peak[r.precision]:7.1f}%" if r.precision in peak else "       -"
        print(f"{r.pair:28} {r.config:10} {r.precision:9} {'yes' if r.compiled else 'no':8} {r.images_per_s:9.1f} "
              f"{achieved:8.1f} {share}  {r.peak_mib:.0f}{workers} MiB")
    rates: dict[tuple[str, str], list[float]] = {}
    for r in results:
        rates.setdefault((r.pair, r.config), []).append(r.images_per_s)
    median = {key: statistics.median(values) for key, values in rates.items()}
    print()
    for pair in dict.fromkeys(r.pair for r in results):
        limits = ", ".join(f"{name} {value / work[pair]:.1f}" for name, value in peak.items())
        print(f"{pair}: {work[pair]:.3f} GFLOP per image; matmul-peak limit in images/s: {limits}")
        for config in CONFIGS:
            if config != "reference" and (pair, config) in median and (pair, "reference") in median:
                ratio = median[pair, config] / median[pair, "reference"]
                print(f"  {config} / reference = {ratio:.2f}x (medians of {len(rates[pair, config])} "
                      f"and {len(rates[pair, 'reference'])}: {median[pair, config]:.1f} and "
                      f"{median[pair, 'reference']:.1f} images/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before them (compiling included)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--pairs", default=",".join(PAIRS), help=f"comma-separated method:teacher:student, "
                        f"default {','.join(PAIRS)}")
    parser.add_argument("--configs", default="fast,reference", help=f"comma-separated, of: {', '.join(CONFIGS)}")
    parser.add_argument("--images", type=int, default=50000,
                        help="training-set size (CRD's bank is this size); CIFAR-100's by default")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the configurations of each pair")
    parser.add_argument("--peak", default=None, metavar="FP32[,BF16]",
                        help="matmul peaks in GFLOP/s instead of measuring them at start-up")
    parser.add_argument("--parts", default=None, metavar="PRECISIONS",
                        help="instead: time the teacher's forward and the student's forward+backward apart, eager "
                             "and compiled, in these precisions (e.g. fp32,bf16)")
    parser.add_argument("--calls", type=int, default=10, help="--parts: calls of each part")
    args = parser.parse_args()
    if args.parts:
        for pair in args.pairs.split(","):
            for precision in args.parts.split(","):
                time_parts(pair, precision, args.calls, resolve_device(args.device))
        return
    unknown = set(args.configs.split(",")) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown --configs {', '.join(sorted(unknown))}; choose from {', '.join(CONFIGS)}")
    device = resolve_device(args.device)
    peak = peaks(device, args.peak)
    print("matmul peak (2048x2048, GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()))
    opt, _ = parse_option(["--path_t", "random", *data_args(args)])
    started = time.perf_counter()
    bundle = build_data(opt)
    print(f"synthetic data: {len(bundle.train)} images in {time.perf_counter() - started:.1f} s")
    pairs = args.pairs.split(",")
    work = {pair: step_gflop_per_image(pair, bundle, args) for pair in pairs}
    results = [measure(pair, config, bundle, args) for pair in pairs
               for _ in range(args.repeats) for config in args.configs.split(",")]
    print(f"\nmachine: {machine(device)}; {args.steps} timed steps after {args.warmup}, batch 64")
    report(results, device, work, peak)


if __name__ == "__main__":
    main()
