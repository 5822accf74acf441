"""t-SNE of a network's penultimate features on a test split, coloured by class, as a PNG (or SVG/PDF).

    python scripts/plot_tsne.py --path save/student_model/<run>

The features are ``F[-1]``, the pooled vector the classifier reads (for a SimKD student, the pooled
projection the teacher's classifier reads). The distillers' script embeds the logits instead
(``--features logits``). Networks are model files or run folders; the data set is the run's own (its
config.json) unless data flags say otherwise. The title names the network, its run and the data set;
up to 20 classes get a key, more are told apart by colour and marker.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from helper.config_file import parse_with_run_data  # noqa: E402
from helper.errors import run_cli  # noqa: E402
from helper.figures import CLASS_COLOURS, MAX_CLASS_KEY, class_style, dataset_label, images_shown  # noqa: E402
from helper.options import OneLineParser  # noqa: E402
from helper.plotting import (  # noqa: E402
    add_common_args,
    check_common_args,
    class_names,
    default_output,
    load_data,
    load_network,
    require,
    run_network,
    save_figure,
)
from helper.precision import resolve_device  # noqa: E402

FEATURES = {"penultimate": "penultimate features F[-1]", "logits": "logits"}


def parse_option(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog="plot_tsne.py", description="t-SNE of a network's features by class (PNG)")
    parser.add_argument("--path", required=True, help="model file or run folder")
    parser.add_argument("--model_s", default=None, help="architecture (default: from the file or folder)")
    parser.add_argument("--out", default=None,
                        help="figure to write, .png, .svg or .pdf (default: its folder's tsne_<dataset>.png)")
    parser.add_argument("--features", default="penultimate", choices=["penultimate", "logits"],
                        help="what to embed: F[-1], or the logits as the distillers' script")
    parser.add_argument("--perplexity", type=float, default=40.0, help="t-SNE perplexity (the distillers': 40)")
    parser.add_argument("--iters", type=int, default=300, help="t-SNE iterations (the distillers': 300; at least 250)")
    parser.add_argument("--seed", type=int, default=0, help="t-SNE random state")
    add_common_args(parser)
    opt = parse_with_run_data(parser, argv, ("path",))
    check_common_args(opt, parser)
    if opt.perplexity <= 0:
        parser.error(f"--perplexity must be positive, got {opt.perplexity}")
    if opt.iters < 250:
        parser.error(f"--iters must be at least 250 (scikit-learn's minimum), got {opt.iters}")
    return opt


def main(argv: list[str] | None = None) -> None:
    opt = parse_option(argv)
    plt = require("matplotlib")
    manifold = require("sklearn.manifold")
    device = resolve_device(opt.device)
    bundle = load_data(opt)
    model, arch, run = load_network(opt.path, opt.model_s, bundle, device)
    feats, logits, labels = run_network(model, bundle, opt, device)
    points = feats if opt.features == "penultimate" else logits
    perplexity = min(opt.perplexity, (len(points) - 1) / 3)  # scikit-learn needs perplexity < samples
    print(f"t-SNE of {points.shape[0]} {opt.features} vectors of {points.shape[1]} dimensions, perplexity "
          f"{perplexity:g}")
    tsne = manifold.TSNE(n_components=2, perplexity=perplexity, max_iter=opt.iters, random_state=opt.seed)
    embedded = tsne.fit_transform(points)
    out = Path(opt.out) if opt.out else default_output(opt.path, f"tsne_{bundle.name}")
    fig = draw(plt, embedded, labels, class_names(bundle),
               f"t-SNE of {arch}'s {FEATURES[opt.features]}, run {run}\n"
               f"{dataset_label(vars(opt))}; {images_shown(len(labels), len(bundle.val))}")
    save_figure(fig, out, opt.dpi)
    plt.close(fig)


def draw(plt: object, embedded: np.ndarray, labels: np.ndarray, names: list[str], title: str) -> object:
    """The scatter, one colour and marker per class, with a key where there are few classes."""
    fig, ax = plt.subplots(figsize=(12, 10))
    for label in np.unique(labels):
        colour, marker = class_style(int(label))
        points = embedded[labels == label]
        ax.scatter(points[:, 0], points[:, 1], color=colour, marker=marker, alpha=0.8, s=12, linewidths=0,
                   label=names[label])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE dimension 1")
    ax.set_ylabel("t-SNE dimension 2")
    ax.set_title(title)
    if len(names) <= MAX_CLASS_KEY:
        ax.legend(title="class", loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=2, frameon=False)
    else:
        ax.text(0.0, -0.07, f"{len(names)} classes, each a colour and marker: the colour cycles through "
                f"{len(CLASS_COLOURS)} hues, the marker changes every {len(CLASS_COLOURS)} classes (no key above "
                f"{MAX_CLASS_KEY} classes)", transform=ax.transAxes, va="top", fontsize="small")
    return fig


if __name__ == "__main__":
    run_cli(main)
