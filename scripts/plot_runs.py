"""Curves per epoch for one or many runs: what TensorBoard shows, as PNG and SVG files.

    python scripts/plot_runs.py save/student_model/S:resnet8x4_T:resnet32x4_*   # -> plots/<quantity>.png/.svg
    python scripts/plot_runs.py save --out figs --only test_acc,loss

One figure per quantity in the runs' metrics.jsonl (test accuracy, train loss, each loss term, lr,
epoch time...), every run overlaid; runs of one method share a colour, their trials differ in line
style. Init-stage quantities (AB, FSP, FT) get their own figures. Needs matplotlib
(pip install -r requirements-plot.txt).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helper.runs import Run, find_run_folders, finite, read_run, scalar  # noqa: E402

LINE_STYLES = ("-", "--", ":", "-.")
TITLES = {
    "test_acc": "test accuracy (%)", "test_acc_top5": "test top-5 accuracy (%)", "train_acc": "train accuracy (%)",
    "loss": "train loss (weighted sum)", "test_loss": "test loss", "lr": "learning rate",
    "epoch_time": "seconds per epoch", "loss_cls": "cross-entropy term (-r)", "loss_div": "KD term (-a)",
    "loss_kd": "method's term (-b)",
}


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
    return " ".join(parts)


def plot(runs: list[Run], out: Path, formats: list[str], only: list[str] | None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = series(runs)
    methods = sorted({run.method or "?" for run in runs})
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    several_pairs = len({(r.teacher, r.model, r.dataset) for r in runs}) > 1
    trial_index: dict[int, int] = {}
    for method in methods:
        for k, i in enumerate(i for i, r in enumerate(runs) if (r.method or "?") == method):
            trial_index[i] = k
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for quantity in sorted(data):
        if only and quantity not in only:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for index, (epochs, values) in sorted(data[quantity].items()):
            run = runs[index]
            ax.plot(epochs, values, color=colours[run.method or "?"],
                    linestyle=LINE_STYLES[trial_index[index] % len(LINE_STYLES)], linewidth=1.4,
                    marker="o" if len(epochs) == 1 else None, label=run_label(run, several_pairs))
        ax.set_xlabel("epoch")
        ax.set_ylabel(TITLES.get(quantity, quantity))
        ax.set_title(quantity)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
        fig.tight_layout()
        for fmt in formats:
            path = out / f"{quantity}.{fmt}"
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
    runs = [r for r in (read_run(f) for f in find_run_folders(paths)) if r.rows]
    if not runs:
        print(f"no run with a metrics.jsonl under {', '.join(map(str, paths))}", file=sys.stderr)
        return 1
    written = plot(runs, args.out, args.format, args.only.split(",") if args.only else None)
    print(f"{len(runs)} runs, {len(written)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
