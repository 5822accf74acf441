"""What makes a figure readable alone in a paper draft: human names of the logged quantities, the data set
spelled out, the run a figure was drawn from, and class colours that stay visible on white.

Kept free of torch so that ``scripts/plot_runs.py`` starts fast; matplotlib is imported by the callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# metrics.jsonl keys -> axis and title text; anything else falls back to quantity_name's spelling.
QUANTITY_NAMES = {
    "test_acc": "Test accuracy (%)", "test_acc_top5": "Test top-5 accuracy (%)", "train_acc": "Training accuracy (%)",
    "loss": "Training loss (weighted sum)", "test_loss": "Test loss", "lr": "Learning rate",
    "epoch_time": "Seconds per epoch", "loss_cls": "Cross-entropy term (-r)", "loss_div": "KD term (-a)",
    "loss_kd": "Method's term (-b)", "loss_init": "Loss", "skipped_steps": "Skipped steps (non-finite)",
    "peer_acc": "Peer accuracy (%)",
}

# tab10 (matplotlib's default cycle): ten hues, none lighter than relative luminance 0.7, so every class
# stays visible on a white page; classes beyond ten repeat the hues with another marker.
CLASS_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
CLASS_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "p", "h")
MAX_CLASS_KEY = 20  # a legend of more classes than this is unreadable; the caption says how classes are drawn


def quantity_name(key: str) -> str:
    """``test_acc`` -> 'Test accuracy (%)'; a stage's quantity names its stage (``init_loss_init`` -> 'Loss, init
    stage'); an unknown key is spelled out ('loss_xyz' -> 'Loss xyz')."""
    if key in QUANTITY_NAMES:
        return QUANTITY_NAMES[key]
    stage, _, rest = key.partition("_")
    if rest in QUANTITY_NAMES:
        return f"{QUANTITY_NAMES[rest]}, {stage} stage"
    return key.replace("_", " ").capitalize()


def relative_luminance(colour: str) -> float:
    """Luminance of an sRGB ``#rrggbb`` colour (0 black .. 1 white), as WCAG defines it."""
    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)


def class_style(label: int) -> tuple[str, str]:
    """(colour, marker) of a class: the hue cycles every ten classes, the marker changes with each cycle."""
    return CLASS_COLOURS[label % len(CLASS_COLOURS)], CLASS_MARKERS[label // len(CLASS_COLOURS) % len(CLASS_MARKERS)]


def dataset_label(options: Mapping[str, Any]) -> str:
    """The data set and what sets it apart from another of the same name ('synthetic, 10 classes, 2000 train /
    500 test images, seed 0'), from a run's options or a script's parsed flags."""
    name = str(options.get("dataset") or "?")
    parts = [name]
    if name == "synthetic":
        if options.get("syn_classes") is not None:
            parts.append(f"{options['syn_classes']} classes")
        if options.get("syn_train_size") is not None and options.get("syn_val_size") is not None:
            parts.append(f"{options['syn_train_size']} train / {options['syn_val_size']} test images")
        if options.get("syn_seed") is not None:
            parts.append(f"seed {options['syn_seed']}")
    elif name == "folder" and options.get("data_folder"):
        parts.append(str(options["data_folder"]))
    if name in ("folder", "imagenet") and options.get("image_size"):
        parts.append(f"{options['image_size']} px")
    return ", ".join(parts)


def run_name(model_file: Path) -> str:
    """The run a model file belongs to: its folder's name (train_student/train_teacher's run folder)."""
    return model_file.parent.name or model_file.name


def images_shown(shown: int, total: int) -> str:
    """'10000 test images', or '500 of 10000 test images (a seeded subset)' under --max_images."""
    return f"{shown} test images" if shown == total else f"{shown} of {total} test images (a seeded subset)"
