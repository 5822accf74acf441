"""Reading run folders back: ours (config.json, results.json, metrics.jsonl) and RepDistiller's (checkpoints).

Every field is read as far as the folder carries it; what is missing stays None. Used by
``scripts/summarize.py`` (tables) and ``scripts/plot_runs.py`` (curves).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# RepDistiller's names (helper/naming.py writes the same); '~' is its Windows separator. A variant tag
# (``_memory_type:momentum``, ``_ls:True``) sits between the weights and the trial.
_VARIANT_TAG = r"_([a-z][a-z_]*)[:~]([^_]+)"  # label, value
STUDENT_FOLDER = re.compile(
    r"^S[:~](?P<student>.+?)_T[:~](?P<teacher>.+)_(?P<dataset>[^_]+)_(?P<method>[^_]+)"
    r"_r[:~](?P<r>[^_]+)_a[:~](?P<a>[^_]+)_b[:~](?P<b>[^_]+)(?P<tags>(?:" + _VARIANT_TAG + r")*)_(?P<trial>.+)$")
TEACHER_FOLDER = re.compile(
    r"^(?P<model>.+)_(?P<dataset>[^_]+)_lr_(?P<lr>[^_]+)_decay_(?P<wd>[^_]+)_trial_(?P<trial>.+)$")
RUN_FILES = ("config.json", "results.json", "metrics.jsonl", "ckpt_last.pth")


@dataclass
class Run:
    """One run folder, as far as it could be read."""

    folder: Path
    kind: str  # "student" (train_student.py) or "vanilla" (train_teacher.py: a model on the labels alone)
    source: str  # "ours", "ours (no config.json)" or "RepDistiller checkpoints"
    status: str = "finished"  # "finished", "unfinished" or "failed"
    model: str | None = None  # the student, or the model a vanilla run trains
    teacher: str | None = None
    dataset: str | None = None
    method: str | None = None
    weights: tuple[float, float, float] | None = None  # -r, -a, -b
    variant: str = ""  # the folder name's variant tags ("memory_type:momentum", "optimizer:dot_ls:True"); "" = default
    trial: str | None = None
    best_acc: float | None = None
    last_acc: float | None = None
    epochs: int | None = None  # planned (main stage)
    epochs_done: int | None = None
    epoch_time: float | None = None  # median seconds per main-stage epoch
    teacher_acc: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl
    note: str = ""


def variant_tags(variant: str) -> list[tuple[str, str]]:
    """A run's variant (``Run.variant``, e.g. ``memory_type:momentum_ls:True``) as (label, value) pairs."""
    return re.findall(_VARIANT_TAG, "_" + variant)


def scalar(value: Any) -> float | None:
    """A float from what a checkpoint holds: a Python number or RepDistiller's 0-dim tensor."""
    if value is None:
        return None
    item = getattr(value, "item", None)
    try:
        return float(item() if callable(item) else value)
    except (TypeError, ValueError):
        return None


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def is_run_folder(folder: Path) -> bool:
    named = bool(STUDENT_FOLDER.match(folder.name) or TEACHER_FOLDER.match(folder.name))
    return any((folder / name).exists() for name in RUN_FILES) or (named and any(folder.glob("*.pth")))


def find_run_folders(paths: list[Path]) -> list[Path]:
    """Each path that is a run folder, and the run folders below each path that is not."""
    found: list[Path] = []
    for path in paths:
        if is_run_folder(path):
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_dir() and is_run_folder(p)))
    return list(dict.fromkeys(found))


def _load_checkpoint(path: Path) -> dict | None:
    """A checkpoint read safely (weights_only), or None when it cannot be."""
    from helper.checkpoint import safe_load
    from helper.errors import UserError

    try:
        return safe_load(path)
    except UserError:
        return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a half-written last line (a run killed mid-write) is left out."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def canonical_method(name: str | None) -> str | None:
    """Our registry's name for a method (RepDistiller's --distill names and aliases map onto it)."""
    if name is None:
        return None
    try:
        from distiller_zoo.registry import get_method

        return get_method(name).name
    except (ImportError, ValueError, KeyError):
        return name.lower()


def _options_from_checkpoints(folder: Path) -> dict[str, Any]:
    """The 'opt' a finished run stored in <arch>_last.pth (a dict here, a Namespace in RepDistiller)."""
    for path in [p for p in sorted(folder.glob("*_last.pth")) if p.name != "ckpt_last.pth"] + [
            folder / "ckpt_last.pth"]:
        if path.exists():
            opt = (_load_checkpoint(path) or {}).get("opt")
            if opt is not None:
                return dict(opt) if isinstance(opt, dict) else vars(opt)
    return {}


def _teacher_checkpoint_acc(path_t: str | None, folder: Path) -> float | None:
    """The accuracy a teacher checkpoint records ('best_acc' or 'accuracy', float or tensor)."""
    if not path_t:
        return None
    for candidate in (Path(path_t), folder.parent.parent.parent / path_t):
        if candidate.is_file():
            ckpt = _load_checkpoint(candidate) or {}
            for key in ("best_acc", "accuracy"):
                if finite(scalar(ckpt.get(key))):
                    return scalar(ckpt.get(key))
    return None


def _describe(run: Run) -> None:
    """Model, teacher, dataset, method and weights: from the options, else from the folder name."""
    opt = run.options
    student = STUDENT_FOLDER.match(run.folder.name)
    vanilla = TEACHER_FOLDER.match(run.folder.name)
    if "model_s" in opt or (student and "model" not in opt):
        run.kind = "student"
        run.model = opt.get("model_s") or student["student"]
        run.teacher = opt.get("model_t") or (student["teacher"] if student else None)
        run.method = canonical_method(opt.get("distill") or (student["method"] if student else None))
        weights = [opt.get(k) for k in ("gamma", "alpha", "beta")]
        if None in weights and student:
            weights = [student[k] for k in ("r", "a", "b")]
        try:
            run.weights = tuple(float(w) for w in weights)
        except (TypeError, ValueError):
            run.weights = None
        run.trial = str(opt.get("trial", student["trial"] if student else ""))
        run.dataset = opt.get("dataset") or (student["dataset"] if student else None)
        run.variant = student["tags"].lstrip("_") if student else ""
    else:
        run.kind = "vanilla"
        run.model = opt.get("model") or (vanilla["model"] if vanilla else None)
        run.method = "vanilla"
        run.trial = str(opt.get("trial", vanilla["trial"] if vanilla else ""))
        run.dataset = opt.get("dataset") or (vanilla["dataset"] if vanilla else None)


def _figures_from_checkpoints(run: Run) -> None:
    """RepDistiller's folders: best from <arch>_best.pth, last from ckpt_epoch_<epochs>.pth."""
    best = next((p for p in sorted(run.folder.glob("*_best.pth"))), None)
    if best is not None:
        run.best_acc = scalar((_load_checkpoint(best) or {}).get("best_acc"))
    periodic = {}
    for path in run.folder.glob("ckpt_epoch_*.pth"):
        try:
            periodic[int(path.stem.rsplit("_", 1)[1])] = path
        except ValueError:
            continue
    run.epochs = run.options.get("epochs")
    if periodic:
        run.epochs_done = max(periodic)
    if run.epochs in periodic:
        run.last_acc = scalar((_load_checkpoint(periodic[run.epochs]) or {}).get("accuracy"))
        run.epochs_done = run.epochs
    if run.last_acc is None:
        run.note = "last-epoch accuracy not stored (no ckpt_epoch_<epochs>.pth)"


def read_run(folder: str | Path) -> Run:
    """Everything summarize and plot_runs need from one run folder."""
    folder = Path(folder)
    config = _read_json(folder / "config.json")
    has_ours = (folder / "results.json").exists() or (folder / "metrics.jsonl").exists()
    source = "ours" if config else ("ours (no config.json)" if has_ours else "RepDistiller checkpoints")
    run = Run(folder=folder, kind="student", source=source)
    if isinstance(config, dict):
        run.config = config
        run.options = dict(config.get("options") or {})
        run.teacher_acc = scalar((config.get("teacher") or {}).get("test_acc"))
    else:
        run.options = _options_from_checkpoints(folder)
    _describe(run)
    run.rows = read_metrics(folder / "metrics.jsonl")
    main_rows = [r for r in run.rows if r.get("stage", "main") == "main"]
    times = [r["epoch_time"] for r in main_rows if finite(scalar(r.get("epoch_time")))]
    run.epoch_time = statistics.median(times) if times else None
    results = _read_json(folder / "results.json")
    if isinstance(results, dict):
        run.best_acc, run.last_acc = scalar(results.get("best_acc")), scalar(results.get("last_acc"))
        run.epochs = results.get("epochs") or run.options.get("epochs")
        run.epochs_done = run.epochs
        if not (finite(run.best_acc) and finite(run.last_acc)):
            run.status, run.note = "failed", "results.json holds no finite accuracy"
    elif (folder / "results.json").exists():
        run.status, run.note = "failed", "results.json is unreadable"
    elif has_ours or (folder / "ckpt_last.pth").exists():
        accs = [scalar(r.get("test_acc")) for r in main_rows if finite(scalar(r.get("test_acc")))]
        run.epochs = run.options.get("epochs")
        run.epochs_done = max((r["epoch"] for r in main_rows), default=0)
        run.last_acc, run.best_acc = (accs[-1], max(accs)) if accs else (None, None)
        run.status = "unfinished"
        run.note = f"stopped or still running: epoch {run.epochs_done} of {run.epochs or '?'}"
    else:
        _figures_from_checkpoints(run)
        finished = any(p.name != "ckpt_last.pth" for p in folder.glob("*_last.pth"))
        if not finished:
            run.status = "unfinished"
            run.note = f"no <model>_last.pth: epoch {run.epochs_done or '?'} of {run.epochs or '?'}"
        elif not finite(run.best_acc) and not finite(run.last_acc):
            run.status, run.note = "failed", "no accuracy in its checkpoints"
    if run.kind == "student" and run.teacher_acc is None:
        run.teacher_acc = _teacher_checkpoint_acc(run.options.get("path_t"), folder)
    if run.model is None or run.dataset is None:
        run.status, run.note = "failed", "cannot tell the model or data set (no options, unknown folder name)"
    return run
