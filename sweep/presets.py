"""Sweeps that reproduce published tables. Pairs come from docs/published_results.csv (the cells a source
reports), weights from our scripts (RepDistiller's lines of scripts/run_cifar_distill.sh) or the registry,
so neither is copied here. A teacher is RepDistiller's published checkpoint where it has been fetched
(scripts/fetch_pretrained_teachers.sh), else the sweep trains it first."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from helper.errors import UserError
from sweep.grid import grid_calls
from sweep.runs import ROOT, entry_index
from sweep.script import script_calls

PUBLISHED = ROOT / "docs" / "published_results.csv"
RD_TEACHER = "./save/models/{teacher}_vanilla/ckpt_epoch_240.pth"  # where fetch_pretrained_teachers.sh puts them
# the source each preset's table is compared with (summarize.py --source) and its layout
REPORT = {"crd-cifar100": ("CRD", "crd"), "mdistiller-cifar100": ("mdistiller", "crd"), "kdzoo": ("KD-Zoo", "flat")}
PRESETS = tuple(REPORT)
_PAIR_FLAGS = {"--path_t", "--model_s", "--model_t", "--trial", "--dataset"}


def _published_pairs(source: str, dataset: str = "cifar100") -> list[tuple[str, str]]:
    with PUBLISHED.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["source"] == source and r["dataset"] == dataset and r["teacher"]]
    return list(dict.fromkeys((r["teacher"], r["student"]) for r in rows))


def _published_cells(source: str) -> set[tuple[str, str, str, bool]]:
    """(teacher, student, method, with a KD term) of each published figure."""
    with PUBLISHED.open(newline="") as handle:
        return {(r["teacher"], r["student"], r["method"], r["kd_term"] == "yes") for r in csv.DictReader(handle)
                if r["source"] == source and r["dataset"] == "cifar100" and r["teacher"]}


def _without_pair_flags(args: list[str]) -> list[str]:
    """A script line's method part: everything but the pair, data set and trial flags (which take a value)."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in _PAIR_FLAGS:
            skip = True
        else:
            kept.append(arg)
    return kept


def _rd_methods() -> list[list[str]]:
    """RepDistiller's own lines of scripts/run_cifar_distill.sh (those before our additions) as method args."""
    lines = []
    for _, args in script_calls(ROOT / "scripts" / "run_cifar_distill.sh", []):
        method = _without_pair_flags(args[entry_index(args) + 1:])
        if method[:2] == ["--distill", "kdsvd"]:  # the first line beyond RepDistiller's (the script says so)
            break
        lines.append(method)
    return lines


def _weight(method: list[str], flag: str) -> float:
    return float(method[method.index(flag) + 1]) if flag in method else 0.0


def _teacher_path(teacher: str, cwd: Path) -> str | None:
    path = RD_TEACHER.format(teacher=teacher)
    return path if (cwd / path).is_file() else None


def crd_grid(cwd: Path) -> dict[str, Any]:
    """RepDistiller's Tables 1 and 2: its 13 pairs x its methods where it reports the cell, and CRD+KD on
    every pair (its script's last line), with the weights of its script."""
    cells = _published_cells("CRD")
    methods = _rd_methods()
    runs = []
    for teacher, student in _published_pairs("CRD"):
        for method in methods:
            name, with_kd = method[method.index("--distill") + 1], _weight(method, "-a") > 0
            crd_kd = name == "crd" and with_kd
            if crd_kd or (teacher, student, name, with_kd) in cells:
                runs.append((teacher, student, method))
    return {"runs": runs}


def mdistiller_grid() -> dict[str, Any]:
    methods: list[Any] = ["kd", "dkd", "reviewkd", {"distill": "kd", "args": "--optimizer dot"}]
    return {"pairs": [{"teacher": t, "student": s} for t, s in _published_pairs("mdistiller")], "methods": methods}


def preset_calls(name: str, trials: int, extra: list[str], cwd: Path = ROOT) -> list[tuple[Path, list[str]]]:
    """(directory, arguments after ``python``) of each run of preset ``name`` with ``trials`` trials."""
    if name not in REPORT:
        raise UserError(f"unknown --preset '{name}'; choose one of: {', '.join(PRESETS)}")
    if name == "kdzoo":
        calls = []
        for trial in range(1, trials + 1):  # the script's TRIAL names every run's trial, its baselines' too
            calls += script_calls(ROOT / "scripts" / "run_cifar_zoo.sh", extra, {"TRIAL": str(trial)})
        return calls
    if name == "mdistiller-cifar100":
        grid = mdistiller_grid()
        return grid_calls(_with_teachers(grid["pairs"], cwd) | {"methods": grid["methods"], "trials": trials,
                                                                 "args": extra}, cwd)
    teachers, students = [], []
    for teacher, student, method in crd_grid(cwd)["runs"]:
        pair = _with_teachers([{"teacher": teacher, "student": student}], cwd)
        i = method.index("--distill")
        rest = method[:i] + method[i + 2:]
        for call in grid_calls(pair | {"methods": [{"distill": method[i + 1], "args": rest}],
                                       "trials": trials, "args": extra}, cwd):
            (teachers if "train_teacher.py" in call[1] else students).append(call)
    unique = dict.fromkeys((cwd_, tuple(args)) for cwd_, args in teachers + students)  # a teacher once
    return [(cwd_, list(args)) for cwd_, args in unique]


def _with_teachers(pairs: list[dict[str, str]], cwd: Path) -> dict[str, Any]:
    """The pairs with RepDistiller's published teacher where it is on disk (else the grid trains it)."""
    out = []
    for pair in pairs:
        path = _teacher_path(pair["teacher"], cwd)
        out.append(pair | ({"path_t": path} if path else {}))
    return {"pairs": out}
