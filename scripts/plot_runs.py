"""Curves per epoch for one or many runs: what TensorBoard shows, as PNG and SVG files.

    python scripts/plot_runs.py save/student_model/S:resnet8x4_T:resnet32x4_*   # -> plots/<quantity>.png/.svg
    python scripts/plot_runs.py save --out figs --only test_acc,loss

One figure per quantity in the runs' metrics.jsonl (test accuracy, train loss, each loss term, lr,
epoch time...), every run overlaid; runs of one method share a colour, their trials differ in line
style; unfinished or failed runs are dashed and say so in the legend ('unfinished, epoch 3/240'). Runs of
different data sets (or sizes of the synthetic one) get figures of their own, <quantity>_<data set>.png;
each title names the quantity and the data set. The learning rate is drawn as the steps it takes (epoch
k's rate over epoch k). Init-stage quantities (AB, FSP, FT) get their own figures. Needs matplotlib
(pip install -r requirements-plot.txt).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helper.figures import dataset_label, quantity_name  # noqa: E402
from helper.runs import Run, find_run_folders, finite, read_runs, scalar  # noqa: E402

# Trials of a method share its colour and differ in line style; dashed is kept for unfinished or failed runs.
TRIAL_STYLES = ("-", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))
NOT_FINISHED_STYLE = "--"


def series(runs: list[Run]) -> dict[str, dict[int, tuple[list[int], list[float]]]]:
    """quantity -> run index -> (epochs, values); non-main stages prefixed with their name."""
    out: dict[str, dict[int, tuple[list[int], list[float]]]] = {}
    for index, run in enumerate(runs):
        for row in run.rows:
            stage = row.get("stage", "main")
            for key, value in row.items():
                if key in ("stage", "epoch") or not finite(scalar(value)) or isinstance(value, bool):
                    continue
                name = key if stage == "main" else f"{stage}_{key}"
                epochs, values = out.setdefault(name, {}).setdefault(index, ([], []))
                epochs.append(row["epoch"])
                values.append(float(value))
    return out


def run_label(run: Run, several_pairs: bool) -> str:
    parts = [run.method or "?"]
    if run.weights:
        parts.append("r:{:g} a:{:g} b:{:g}".format(*run.weights))
    if several_pairs:
        parts.insert(0, f"{run.teacher}→{run.model}" if run.teacher else str(run.model))
    if run.trial:
        parts.append(f"#{run.trial}")
    if run.status != "finished":
        parts.append(f"({run.status}, epoch {run.epochs_done or '?'}/{run.epochs or '?'})")
    return " ".join(parts)


def log_scale(values: list[float]) -> bool:
    """Whether positive values span more than a factor of ten."""
    return min(values) > 0 and max(values) > 10 * min(values)


def data_sets(runs: list[Run]) -> dict[str, list[int]]:
    """Data set (as dataset_label spells it) -> indices of its runs, in the runs' order."""
    groups: dict[str, list[int]] = {}
    for index, run in enumerate(runs):
        groups.setdefault(dataset_label(run.options or {"dataset": run.dataset}), []).append(index)
    return groups


def file_stem(quantity: str, data_set: str, several: bool) -> str:
    """``test_acc``, or with several data sets ``test_acc_synthetic-10-classes-...``."""
    return f"{quantity}_{re.sub(r'[^A-Za-z0-9.]+', '-', data_set).strip('-')}" if several else quantity


def figures(runs: list[Run], only: list[str] | None) -> Iterator[tuple[str, object]]:
    """(file stem, matplotlib Figure) for each quantity of each data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    data = series(runs)
    methods = sorted({run.method or "?" for run in runs})
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    groups = data_sets(runs)
    for data_set, members in groups.items():
        several_pairs = len({(runs[i].teacher, runs[i].model) for i in members}) > 1
        trial_index = {i: sum((runs[k].method or "?") == (runs[i].method or "?") for k in members if k < i)
                       for i in members}
        for quantity in sorted(data):
            lines = {i: data[quantity][i] for i in members if i in data[quantity]}
            if (only and quantity not in only) or not lines:
                continue
            steps = quantity == "lr" or quantity.endswith("_lr")
            fig, ax = plt.subplots(figsize=(7, 4.5))
            for index, (epochs, values) in lines.items():
                run = runs[index]
                if steps:  # epoch k trains at its rate from k-1 to k: a staircase, not a ramp between epochs
                    epochs, values = [epochs[0] - 1, *epochs], [*values, values[-1]]
                style = (TRIAL_STYLES[trial_index[index] % len(TRIAL_STYLES)] if run.status == "finished"
                         else NOT_FINISHED_STYLE)
                ax.plot(epochs, values, color=colours[run.method or "?"], linestyle=style, linewidth=1.4,
                        drawstyle="steps-post" if steps else "default",
                        marker="o" if len(epochs) == 1 else None, label=run_label(run, several_pairs))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if steps and log_scale([v for _, values in lines.values() for v in values]):
                ax.set_yscale("log")  # step decays by 10x apart: each step stays visible
            ax.set_xlabel("epoch")
            ax.set_ylabel(quantity_name(quantity))
            ax.set_title(f"{quantity_name(quantity)}\n{data_set}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small", loc="best")
            fig.tight_layout()
            yield file_stem(quantity, data_set, len(groups) > 1), fig


def plot(runs: list[Run], out: Path, formats: list[str], only: list[str] | None) -> list[Path]:
    """Every figure of ``figures``, in each format, under ``out``."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, fig in figures(runs, only):
        for fmt in formats:
            path = out / f"{stem}.{fmt}"
            fig.savefig(path)
            written.append(path)
        plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("paths", nargs="*", type=Path, help="run folders, or folders to search (default: ./save)")
    parser.add_argument("--out", type=Path, default=Path("plots"), help="folder for the figures (default: plots)")
    parser.add_argument("--format", nargs="+", default=["png", "svg"], choices=["png", "svg", "pdf"])
    parser.add_argument("--only", default=None, help="comma-separated quantities, e.g. test_acc,loss,loss_kd")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plot_runs.py needs matplotlib: pip install -r requirements-plot.txt", file=sys.stderr)
        return 1
    paths = args.paths or [Path("save")]
    runs = [r for r in read_runs(find_run_folders(paths), "plot_runs.py") if r.rows]
    if not runs:
        print(f"no run with a metrics.jsonl under {', '.join(map(str, paths))}", file=sys.stderr)
        return 1
    written = plot(runs, args.out, args.format, args.only.split(",") if args.only else None)
    several = len(data_sets(runs))
    print(f"{len(runs)} runs, {len(written)} files in {args.out}"
          + (f" ({several} data sets, each in figures of its own)" if several > 1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
