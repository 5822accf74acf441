"""The quickstart's closing lines: the three test accuracies, what they mean, and whether they show what
the demo promises (teacher best, the student with KD well above the same student alone).

    python scripts/quickstart_summary.py TEACHER_RUN KD_RUN ALONE_RUN     (run folders under save/)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helper import runs  # noqa: E402

# The smallest KD-minus-alone gap that counts as the demo working; docs/quickstart.md measured 21.7-67.7 points.
CLEAR_GAP = 10.0


@dataclass(frozen=True)
class Run:
    """One finished run, as the summary describes it."""

    model: str
    images: int
    epochs: int
    last_acc: float
    best_acc: float
    precision: str = ""


def read_run(folder: Path) -> Run:
    """A finished run folder as :func:`helper.runs.read_run` reads it, plus its training-set size and precision."""
    run = runs.read_run(folder)
    return Run(model=run.model, images=int(run.options["syn_train_size"]), epochs=int(run.epochs),
               last_acc=run.last_acc, best_acc=run.best_acc, precision=str(run.config.get("precision", "")))


def summary_lines(teacher: Run, kd: Run, alone: Run) -> list[str]:
    """The figures, what each one is, the gaps, and a warning when they do not show the expected order."""
    rows = [(f"teacher {teacher.model}", teacher), (f"student {kd.model} with KD", kd),
            (f"student {alone.model} alone", alone)]
    rows = [(f"{name} ({run.images:,} images, {run.epochs} epoch{'s' * (run.epochs != 1)}):", run)
            for name, run in rows]
    width = max(len(label) for label, _ in rows)
    precision = f", {teacher.precision}" if teacher.precision else ""
    lines = [f"test accuracy on the synthetic set (100 classes, the same 1,000 test images{precision}):"]
    lines += [f"  {label:<{width}}  {run.last_acc:6.2f} (best {run.best_acc:.2f})" for label, run in rows]
    gain, short = kd.last_acc - alone.last_acc, teacher.last_acc - kd.last_acc
    source = "its teacher" if teacher.images == kd.images else f"a teacher that saw {teacher.images:,}"
    lines += [f"Both students saw the same {kd.images:,} images; the KD one also matched the soft labels of {source}.",
              f"KD gain: {gain:+.2f} points over the student alone; the teacher stays {short:.2f} ahead "
              "(ranges: docs/quickstart.md)."]
    if not (teacher.last_acc > kd.last_acc and gain >= CLEAR_GAP):
        lines.append(f"Unexpected: the demo should show teacher > student with KD > student alone + {CLEAR_GAP:g} "
                     "points; please report this output with your CPU (lscpu).")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("teacher", "kd", "alone"):
        parser.add_argument(name, type=Path, help=f"the {name} run's folder")
    args = parser.parse_args(argv)
    print()
    print("\n".join(summary_lines(read_run(args.teacher), read_run(args.kd), read_run(args.alone))))


if __name__ == "__main__":
    main()
