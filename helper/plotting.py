"""What the two figure scripts compute (scripts/plot_tsne.py, scripts/plot_corr.py) and what they share:
the data flags (the run's own data set by default), reading the networks, running them over a test split,
saving the figure, and the optional plotting libraries."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from dataset import DATASETS, DatasetUnavailable, add_data_args, build_data, make_val_loader
from dataset.base import DataBundle
from helper.errors import UserError, as_user_errors
from helper.figures import run_name
from helper.model_file import check_classes, load_model_file, resolve_model_file

INSTALL = "pip install -r requirements-plot.txt"
FORMATS = ("png", "svg", "pdf")  # what --out may end in


def require(module: str) -> object:
    """Import an optional plotting library, or say in one line how to install it."""
    try:
        if module == "matplotlib":
            import matplotlib

            matplotlib.use("Agg")  # files only, no display needed
            import matplotlib.pyplot as plt

            return plt
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"the figures need {module.split('.')[0]}, which is not installed: {INSTALL}") from exc


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The data flags of the training scripts, and where and how to run the networks."""
    add_data_args(parser)
    parser.set_defaults(num_workers=2)
    g = parser.add_argument_group("running the networks")
    g.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N, mps")
    g.add_argument("--batch_size", type=int, default=256, help="test images per forward pass")
    g.add_argument("--max_images", type=int, default=0,
                   help="use this many test images (a seeded random subset); 0: all of them")
    g.add_argument("--dpi", type=int, default=300, help="resolution of a PNG")


def check_common_args(opt: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if opt.dataset not in DATASETS:
        parser.error(f"unknown --dataset '{opt.dataset}'; choose one of: {', '.join(DATASETS)}")
    for name in ("batch_size", "dpi"):
        if getattr(opt, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(opt, name)}")
    if opt.max_images < 0:
        parser.error(f"--max_images must not be negative, got {opt.max_images}")
    if opt.out is not None and Path(opt.out).suffix.lower().lstrip(".") not in FORMATS:
        parser.error(f"--out {opt.out}: name a .png, .svg or .pdf file")


def load_data(opt: argparse.Namespace) -> DataBundle:
    with as_user_errors(ValueError, DatasetUnavailable):
        return build_data(opt)


def load_network(path: str, arch: str | None, bundle: DataBundle, device: torch.device) -> tuple[nn.Module, str, str]:
    """A network from its model file or run folder, checked against the data set, in eval mode on ``device``;
    with its architecture and its run's name (for the figure's title)."""
    model, arch, _ = load_model_file(path, arch)
    check_classes(model, bundle, path)
    return model.to(device).eval(), arch, run_name(resolve_model_file(path))


def default_output(path: str, stem: str) -> Path:
    """``<stem>.png`` in the folder of the network's file (its run folder)."""
    return resolve_model_file(path).parent / f"{stem}.png"


def save_figure(fig: object, out: Path, dpi: int) -> None:
    """Write ``fig`` in the format its name ends in (PNG, SVG or PDF); the folder is made if needed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, format=out.suffix.lower().lstrip("."), bbox_inches="tight")
    print(f"wrote {out}")


@torch.no_grad()
def run_network(model: nn.Module, bundle: DataBundle, opt: argparse.Namespace,
                device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Penultimate features ``F[-1]``, logits and labels over the test split (or ``--max_images`` of it)."""
    data = bundle.val
    if opt.max_images and opt.max_images < len(data):
        picks = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:opt.max_images]
        data = Subset(data, sorted(picks.tolist()))
    loader = make_val_loader(dataclasses.replace(bundle, val=data), opt.batch_size, opt.num_workers)
    feats, logits, labels = [], [], []
    for x, y in loader:
        f, z = model(x.to(device), is_feat=True)
        feats.append(f[-1].float().cpu())
        logits.append(z.float().cpu())
        labels.append(y)
    return torch.cat(feats).numpy(), torch.cat(logits).numpy(), torch.cat(labels).numpy()


def class_mean_logits(logits: np.ndarray, labels: np.ndarray, num_classes: int, standardize: bool) -> np.ndarray:
    """Row ``c``: the mean logit vector over the images of class ``c`` (each vector standardised to zero mean
    and unit, unbiased, std first when asked, as the CRD/distillers figure). NaN rows for absent classes."""
    z = logits.astype(np.float64)
    if standardize:
        z = (z - z.mean(axis=1, keepdims=True)) / z.std(axis=1, ddof=1, keepdims=True)
    sums = np.zeros((num_classes, z.shape[1]))
    np.add.at(sums, labels, z)
    counts = np.bincount(labels, minlength=num_classes)[:, None].astype(np.float64)
    out = np.full_like(sums, np.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


def correlation_difference(teacher: np.ndarray, student: np.ndarray) -> np.ndarray:
    """``|student - teacher|`` elementwise, the diagonal set to 0 (the figure shows the off-diagonal terms)."""
    diff = np.abs(student - teacher)
    np.fill_diagonal(diff, 0.0)
    return diff


def class_names(bundle: DataBundle) -> list[str]:
    """The data set's class names where it carries them (torchvision's CIFAR, image folders), else 'class k'."""
    names = getattr(bundle.val, "classes", None)
    if isinstance(names, list | tuple) and len(names) == bundle.num_classes:
        return [str(n) for n in names]
    return [f"class {c}" for c in range(bundle.num_classes)]
