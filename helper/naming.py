"""Run-folder names and teacher-architecture discovery, as RepDistiller names them."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from distiller_zoo.registry import flag_tag, run_tag

_STUDENT_FOLDER = re.compile(r"^S[:~](.+?)_T[:~]")

# Options of every method that change what a run trains, named in its folder when not at their default.
_OPTION_TAGS = (flag_tag("optimizer", "sgd"), flag_tag("logit_standardization", False, label="ls"))


def teacher_run_name(opt: argparse.Namespace) -> str:
    return f"{opt.model}_{opt.dataset}_lr_{opt.learning_rate}_decay_{opt.weight_decay}_trial_{opt.trial}"


def student_run_name(opt: argparse.Namespace) -> str:
    """RepDistiller's ``S:<s>_T:<t>_<data>_<method>_r:_a:_b:_<trial>``; a method variant chosen by the
    method's own flags, and DOT or logit standardisation, add their tags before the trial
    (``..._b:1.0_memory_type:momentum_1``, ``..._b:0.0_optimizer:dot_ls:True_1``)."""
    tags = run_tag(opt) + "".join(tag(opt) for tag in _OPTION_TAGS)
    return (
        f"S:{opt.model_s}_T:{opt.model_t}_{opt.dataset}_{opt.distill}"
        f"_r:{opt.gamma}_a:{opt.alpha}_b:{opt.beta}{tags}_{opt.trial}"
    )


def arch_from_path(path: str | Path, known: list[str]) -> str | None:
    """The architecture a checkpoint's folder is named after, or None.

    RepDistiller splits the parent folder on '_' and keeps the first token ('wrn' keeps three),
    which misreads names that contain '_' (MobileNetV2_Imagenet) and its own student folders. We
    match the longest known model name that prefixes the folder name instead, and read the
    student name out of ``S:<name>_T:...`` folders.
    """
    folder = Path(path).resolve().parent.name
    match = _STUDENT_FOLDER.match(folder)
    if match and match.group(1) in known:
        return match.group(1)
    candidates = [name for name in known if folder == name or folder.startswith(name + "_")]
    return max(candidates, key=len) if candidates else None
