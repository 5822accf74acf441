"""Steady-state training throughput of train_student's step: the fast default against RepDistiller's setup.

    python scripts/benchmark.py                      # all pairs, 30 timed steps after 5 warm-up steps
    python scripts/benchmark.py --pairs kd:resnet32x4:resnet8x4 --steps 50 --device cuda
    python scripts/benchmark.py --configs fast,compiled,reference
    python scripts/benchmark.py --repeats 3          # configurations interleaved, medians reported

Each measurement builds its pieces with train_student's own functions (options, runtime, data, method,
loader, placement, stages) and times helper.engine.train_epoch, so it measures the code path a run
takes; only the teacher is random instead of loaded. The clock runs over ``--steps`` steps after
``--warmup`` ones (start-up, worker spawn and warm-up excluded), data loading included. The data set
is synthetic, CIFAR-100-shaped and of CIFAR-100's size, so CRD's memory bank (n_data 50,000,
nce_k 16,384) is the real one. Not a test: results depend on the machine; docs/benchmark.md has ours.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset import build_data  # noqa: E402
from helper.engine import EpochTotals, StepVerdict, train_epoch  # noqa: E402
from helper.precision import resolve_device  # noqa: E402
from helper.runlog import Progress  # noqa: E402
from helper.setup import build_train_loader, setup_runtime  # noqa: E402
from models import build_model  # noqa: E402
from train_student import build_method, make_stages, parse_option, place_networks  # noqa: E402

PAIRS = ("kd:resnet32x4:resnet8x4", "crd:resnet32x4:resnet8x4", "kd:wrn_40_2:wrn_16_2")
CONFIGS = {
    "fast": ["--precision", "auto", "--channels_last", "--loader", "memory"],
    "reference": ["--precision", "fp32", "--no-channels_last", "--loader", "torchvision", "--num_workers", "2",
                  "--no-fold_teacher_bn"],
}
CONFIGS["compiled"] = [*CONFIGS["fast"], "--compile"]  # opt-in: compiled during the warm-up steps
DATA = ["--dataset", "synthetic", "--syn_classes", "100", "--syn_val_size", "100", "--batch_size", "64", "--seed", "0"]


def data_args(args: argparse.Namespace) -> list[str]:
    return [*DATA, "--syn_train_size", str(args.images)]


@dataclass
class Result:
    pair: str
    config: str
    precision: str
    images_per_s: float
    peak_mib: float
    worker_peak_mib: float


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


def measure(pair: str, config: str, bundle, args: argparse.Namespace) -> Result:
    """One pair in one configuration, built as train_student.main builds it (random teacher)."""
    method_name, teacher_arch, student_arch = pair.split(":")
    argv = ["--path_t", "random", "--model_t", teacher_arch, "--model_s", student_arch, "--distill", method_name,
            "--device", args.device, *data_args(args), *CONFIGS[config]]
    opt, spec = parse_option(argv)
    rt = setup_runtime(opt)
    reset_peak(rt.device)
    teacher = build_model(opt.model_t, bundle.num_classes)
    student = build_model(opt.model_s, bundle.num_classes)
    method = build_method(spec, student, teacher, opt, bundle)
    loader = build_train_loader(opt, bundle, "crd" if spec.wants_contrast(opt) else "instance", rt)
    teacher, student, method = place_networks(opt, spec, teacher, student, method, rt)
    stage = make_stages(opt, spec, student, student, teacher, method, rt)[-1]
    loader.set_position(1, 0)
    clocked = Clocked(loader, args.warmup, args.steps, rt.device)
    train_epoch(stage.objective, clocked, stage.optimizer, rt.grad_scaler(), rt.device, rt.channels_last,
                EpochTotals(), 0, Progress("", len(loader), 10**9, enabled=False), str, "", StepVerdict(rt.info))
    workers = children_hwm_mib() if rt.device.type == "cpu" else 0.0
    result = Result(pair, config, rt.precision, args.steps * opt.batch_size / clocked.seconds, peak_mib(rt.device),
                    workers)
    del loader, clocked
    gc.collect()  # the workers go before the next measurement starts
    return result


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return (f"{model}, {torch.get_num_threads()} threads, AMX {'yes' if amx else 'no'}, "
            f"torch {torch.__version__}")


def report(results: list[Result], device: torch.device) -> None:
    memory = "peak GPU memory" if device.type == "cuda" else "peak RSS (main; largest worker)"
    print(f"\n{'pair':28} {'config':10} {'precision':9} {'images/s':>9}  {memory}")
    for r in results:
        workers = f"; {r.worker_peak_mib:.0f}" if r.worker_peak_mib else ""
        print(f"{r.pair:28} {r.config:10} {r.precision:9} {r.images_per_s:9.1f}  {r.peak_mib:.0f}{workers} MiB")
    rates: dict[tuple[str, str], list[float]] = {}
    for r in results:
        rates.setdefault((r.pair, r.config), []).append(r.images_per_s)
    median = {key: statistics.median(values) for key, values in rates.items()}
    print()
    for pair in dict.fromkeys(r.pair for r in results):
        for config in ("fast", "compiled"):
            if (pair, config) in median and (pair, "reference") in median:
                ratio = median[pair, config] / median[pair, "reference"]
                print(f"{pair}: {config} / reference = {ratio:.2f}x (medians of {len(rates[pair, config])} "
                      f"and {len(rates[pair, 'reference'])}: {median[pair, config]:.1f} and "
                      f"{median[pair, 'reference']:.1f} images/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--pairs", default=",".join(PAIRS), help=f"comma-separated method:teacher:student, "
                        f"default {','.join(PAIRS)}")
    parser.add_argument("--configs", default="fast,reference", help=f"comma-separated, of: {', '.join(CONFIGS)}")
    parser.add_argument("--images", type=int, default=50000,
                        help="training-set size (CRD's bank is this size); CIFAR-100's by default")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the configurations of each pair")
    args = parser.parse_args()
    opt, _ = parse_option(["--path_t", "random", *data_args(args)])
    started = time.perf_counter()
    bundle = build_data(opt)
    print(f"synthetic data: {len(bundle.train)} images in {time.perf_counter() - started:.1f} s")
    results = [measure(pair, config, bundle, args) for pair in args.pairs.split(",")
               for _ in range(args.repeats) for config in args.configs.split(",")]
    device = resolve_device(args.device)
    print(f"\nmachine: {machine(device)}; {args.steps} timed steps after {args.warmup}, batch 64")
    report(results, device)


if __name__ == "__main__":
    main()
