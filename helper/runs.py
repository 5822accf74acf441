"""Reading run folders back: ours (config.json, results.json, metrics.jsonl) and RepDistiller's (checkpoints).

Every field is read as far as the folder carries it; what is missing stays None. Used by
``scripts/summarize.py`` (tables) and ``scripts/plot_runs.py`` (curves).
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
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
FAILED_FILE = "failed.json"  # helper.trainer writes it when a non-finite loss stops a run (exit 3)
RUN_FILES = ("config.json", "results.json", "metrics.jsonl", "ckpt_last.pth", FAILED_FILE)
# Options that do not change what a run computes (bookkeeping, paths, loaders, where and how fast it ran)
# and those that tell trials apart (trial, seed): runs that differ only in these are trials of one set-up.
NOT_SETUP = frozenset({
    "trial", "seed", "print_freq", "save_freq", "tb_freq", "num_workers", "device", "resume", "overwrite",
    "config", "data_folder", "path_t", "loader", "compile", "compile_mode", "channels_last", "gpu_id", "rank",
    "dist_url", "dist_backend", "multiprocessing_distributed", "nproc_per_node", "world_size",
    "model_path", "tb_path", "model_name", "save_folder", "tb_folder",
})


class UnreadableRun(ValueError):
    """A run folder whose files cannot be what a run writes (binary metrics, a config that is no mapping)."""


@dataclass
class Run:
    """One run folder, as far as it could be read."""

    folder: Path
    kind: str  # "student" (train_student.py), "vanilla" (train_teacher.py: a model on the labels alone)
    #          or "transfer" (transfer_student.py: a linear probe of a student)
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
    """metrics.jsonl rows; a half-written last line (a run killed mid-write) is left out.

    Raises UnreadableRun for what no run writes: bytes that are not text, rows that are not objects or
    carry no whole-number epoch.
    """
    if not path.exists():
        return []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableRun(f"{path.name} is not text") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict):
            raise UnreadableRun(f"{path.name} line {number} is not a JSON object")
        if not isinstance(row.get("epoch"), int) or isinstance(row["epoch"], bool):
            raise UnreadableRun(f"{path.name} line {number} has no whole-number epoch")
        rows.append(row)
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
    if "path_s" in opt:  # transfer_student.py: the student's backbone frozen, a new head trained
        run.kind, run.model, run.method = "transfer", opt.get("model_s"), "linear probe"
        run.trial, run.dataset = str(opt.get("trial", "")), opt.get("dataset")
    elif "model_s" in opt or (student and "model" not in opt):
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


def _read_config(folder: Path) -> dict[str, Any] | None:
    """config.json when there is one; UnreadableRun when it is not the mapping train_*.py write."""
    path = folder / "config.json"
    if not path.exists():
        return None
    config = _read_json(path)
    if not isinstance(config, dict):
        raise UnreadableRun("config.json is not a JSON object")
    for section in ("options", "teacher"):
        if not isinstance(config.get(section) or {}, dict):
            raise UnreadableRun(f"config.json's '{section}' is not a mapping")
    return config


def _check_names(run: Run) -> None:
    for name in ("model", "teacher", "dataset", "method", "trial"):
        if not isinstance(getattr(run, name), (str, type(None))):
            raise UnreadableRun(f"its {name} is {getattr(run, name)!r}, not a name")


def read_run(folder: str | Path) -> Run:
    """Everything summarize and plot_runs need from one run folder; UnreadableRun for a corrupt one."""
    folder = Path(folder)
    config = _read_config(folder)
    has_ours = (folder / "results.json").exists() or (folder / "metrics.jsonl").exists()
    source = "ours" if config else ("ours (no config.json)" if has_ours else "RepDistiller checkpoints")
    run = Run(folder=folder, kind="student", source=source)
    if config is not None:
        run.config = config
        run.options = dict(config.get("options") or {})
        run.teacher_acc = scalar((config.get("teacher") or {}).get("test_acc"))
    else:
        run.options = _options_from_checkpoints(folder)
    _describe(run)
    _check_names(run)
    run.rows = read_metrics(folder / "metrics.jsonl")
    main_rows = [r for r in run.rows if r.get("stage", "main") == "main"]
    times = [r["epoch_time"] for r in main_rows if finite(scalar(r.get("epoch_time")))]
    run.epoch_time = statistics.median(times) if times else None
    results = _read_json(folder / "results.json")
    # A non-finite loss's record wins over a results.json left by the shorter run that --resume extended.
    stopped = (folder / FAILED_FILE).exists()
    if isinstance(results, dict) and not stopped:
        run.best_acc, run.last_acc = scalar(results.get("best_acc")), scalar(results.get("last_acc"))
        run.epochs = results.get("epochs") or run.options.get("epochs")
        run.epochs_done = run.epochs
        if not (finite(run.best_acc) and finite(run.last_acc)):
            run.status, run.note = "failed", "results.json holds no finite accuracy"
    elif (folder / "results.json").exists() and not stopped:
        run.status, run.note = "failed", "results.json is unreadable"
    elif has_ours or stopped or (folder / "ckpt_last.pth").exists():
        accs = [scalar(r.get("test_acc")) for r in main_rows if finite(scalar(r.get("test_acc")))]
        run.epochs = run.options.get("epochs")
        run.epochs_done = max((r["epoch"] for r in main_rows), default=0)
        run.last_acc, run.best_acc = (accs[-1], max(accs)) if accs else (None, None)
        if stopped:
            failed = _read_json(folder / FAILED_FILE)
            run.status = "failed"
            run.note = str(failed.get("error")) if isinstance(failed, dict) else f"{FAILED_FILE} is unreadable"
        else:
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


def setup(run: Run) -> dict[str, Any]:
    """The settings that change a run's result: its options less ``NOT_SETUP``, with the precision it
    resolved to and the number of processes it ran on (config.json's record) where known."""
    settings = {k: v for k, v in run.options.items() if k not in NOT_SETUP}
    for key, name in (("precision", "precision"), ("world_size", "processes")):
        if run.config.get(key) is not None:
            settings[name] = run.config[key]
    return settings


def read_runs(folders: list[Path], prog: str) -> list[Run]:
    """Each folder read; one that cannot be (``UnreadableRun``) is named in one line on stderr and skipped."""
    runs = []
    for folder in folders:
        try:
            runs.append(read_run(folder))
        except UnreadableRun as exc:
            print(f"{prog}: skipped {folder}: {exc}", file=sys.stderr)
    return runs
