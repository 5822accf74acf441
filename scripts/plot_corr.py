"""The CRD paper's figure: how far a student's class correlations are from its teacher's, as a PNG (or SVG/PDF).

    python scripts/plot_corr.py --path_t save/models/wrn_40_2_vanilla --path_s save/student_model/<run>

Each network's matrix has one row per class: the mean over that class's test images of the
standardised logit vector. The figure is ``|student - teacher|`` with the diagonal set to 0, on a
fixed colour scale (``--max_diff``). Networks are model files or run folders; a SimKD student is
read with its projector and the teacher's classifier. The data set is the student run's own (its
config.json, else the teacher's) unless data flags say otherwise; the title names both networks, their
runs and the data set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from helper.config_file import parse_with_run_data  # noqa: E402
from helper.errors import run_cli  # noqa: E402
from helper.figures import MAX_CLASS_KEY, dataset_label, images_shown  # noqa: E402
from helper.options import OneLineParser  # noqa: E402
from helper.plotting import (  # noqa: E402
    add_common_args,
    check_common_args,
    class_mean_logits,
    correlation_difference,
    default_output,
    load_data,
    load_network,
    require,
    run_network,
    save_figure,
)
from helper.precision import resolve_device  # noqa: E402


def parse_option(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog="plot_corr.py", description="teacher-student class-correlation difference (PNG)")
    parser.add_argument("--path_t", required=True, help="teacher model file or run folder")
    parser.add_argument("--path_s", required=True, help="student model file or run folder")
    parser.add_argument("--model_t", default=None, help="teacher architecture (default: from the file or folder)")
    parser.add_argument("--model_s", default=None, help="student architecture (default: from the file or folder)")
    parser.add_argument("--out", default=None,
                        help="figure to write, .png, .svg or .pdf (default: the student folder's corr_<dataset>.png)")
    parser.add_argument("--max_diff", type=float, default=3.0, help="top of the colour scale")
    parser.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=True,
                        help="standardise each logit vector before averaging (as the distillers' figure)")
    add_common_args(parser)
    opt = parse_with_run_data(parser, argv, ("path_s", "path_t"))
    check_common_args(opt, parser)
    if opt.max_diff <= 0:
        parser.error(f"--max_diff must be positive, got {opt.max_diff}")
    return opt


def main(argv: list[str] | None = None) -> None:
    opt = parse_option(argv)
    plt = require("matplotlib")
    device = resolve_device(opt.device)
    bundle = load_data(opt)
    matrices, names = [], []
    for path, arch in ((opt.path_t, opt.model_t), (opt.path_s, opt.model_s)):
        model, arch, run = load_network(path, arch, bundle, device)
        _, logits, labels = run_network(model, bundle, opt, device)
        matrices.append(class_mean_logits(logits, labels, bundle.num_classes, opt.standardize))
        names.append(f"{arch} (run {run})")
    diff = correlation_difference(*matrices)
    print(f"max difference {diff.max():.4f} (at {divmod(int(diff.argmax()), diff.shape[1])}), "
          f"mean difference {diff.mean():.4f}")
    out = Path(opt.out) if opt.out else default_output(opt.path_s, f"corr_{bundle.name}")
    fig, ax = plt.subplots(figsize=(10, 8))
    image = ax.imshow(diff, vmin=0.0, vmax=opt.max_diff, cmap="Blues")
    if bundle.num_classes <= MAX_CLASS_KEY:
        ax.set_xticks(range(bundle.num_classes))
        ax.set_yticks(range(bundle.num_classes))
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("logit of class j")
    ax.set_ylabel("test images of class i")
    teacher, student = names
    ax.set_title(f"Class-correlation difference, student vs teacher\nstudent {student}\nteacher {teacher}\n"
                 f"{dataset_label(vars(opt))}; {images_shown(len(labels), len(bundle.val))}")
    logit = "standardised logit" if opt.standardize else "logit"
    bar = fig.colorbar(image, ax=ax, extend="max" if diff.max() > opt.max_diff else "neither")
    bar.set_label(f"|student − teacher| of the class-mean {logit} (diagonal set to 0)")
    save_figure(fig, out, opt.dpi)
    plt.close(fig)


if __name__ == "__main__":
    run_cli(main)
