"""t-SNE of a network's penultimate features on a test split, coloured by class, as a PNG.

    python scripts/plot_tsne.py --path save/student_model/<run> --dataset cifar100

The features are ``F[-1]``, the pooled vector the classifier reads (for a SimKD student, the pooled
projection the teacher's classifier reads). The distillers' script embeds the logits instead
(``--features logits``). Networks are model files or run folders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from helper.errors import run_cli  # noqa: E402
from helper.options import OneLineParser  # noqa: E402
from helper.plotting import (  # noqa: E402
    add_common_args,
    check_common_args,
    default_output,
    load_data,
    load_network,
    require,
    run_network,
)
from helper.precision import resolve_device  # noqa: E402


def parse_option(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog="plot_tsne.py", description="t-SNE of a network's features by class (PNG)")
    parser.add_argument("--path", required=True, help="model file or run folder")
    parser.add_argument("--model_s", default=None, help="architecture (default: from the file or folder)")
    parser.add_argument("--out", default=None, help="PNG to write (default: its folder's tsne_<dataset>.png)")
    parser.add_argument("--features", default="penultimate", choices=["penultimate", "logits"],
                        help="what to embed: F[-1], or the logits as the distillers' script")
    parser.add_argument("--perplexity", type=float, default=40.0, help="t-SNE perplexity (the distillers': 40)")
    parser.add_argument("--iters", type=int, default=300, help="t-SNE iterations (the distillers': 300; at least 250)")
    parser.add_argument("--seed", type=int, default=0, help="t-SNE random state")
    add_common_args(parser)
    opt = parser.parse_args(argv)
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
    model, _ = load_network(opt.path, opt.model_s, bundle, device)
    feats, logits, labels = run_network(model, bundle, opt, device)
    points = feats if opt.features == "penultimate" else logits
    perplexity = min(opt.perplexity, (len(points) - 1) / 3)  # scikit-learn needs perplexity < samples
    print(f"t-SNE of {points.shape[0]} {opt.features} vectors of {points.shape[1]} dimensions, perplexity "
          f"{perplexity:g}")
    tsne = manifold.TSNE(n_components=2, perplexity=perplexity, max_iter=opt.iters, random_state=opt.seed)
    embedded = tsne.fit_transform(points)
    out = Path(opt.out) if opt.out else default_output(opt.path, f"tsne_{bundle.name}")
    fig, ax = plt.subplots(figsize=(12, 10))
    ax.scatter(embedded[:, 0], embedded[:, 1], c=labels, cmap="tab20c", alpha=0.6, s=8)
    ax.axis("off")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=opt.dpi, format="png", bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    run_cli(main)
