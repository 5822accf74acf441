"""A YAML grid: methods x teacher/student pairs x trials x data sets, as command lines of our entry points.

    name: my-table                # the sweep's name (default: the file's)
    datasets: [cifar100]          # default [cifar100]
    trials: 3                     # 1, 2, 3; or a list of trial names
    args: --epochs 240            # given to every run (a string or a list)
    pairs:
      - {teacher: resnet32x4, student: resnet8x4,
         path_t: ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth}   # {dataset} is filled in
      - {teacher: resnet56, student: resnet20}   # no path_t: the sweep trains the teacher first
    methods:
      - kd                        # the registry's default weights for the method
      - {distill: crd, r: 1, a: 1, b: 0.8, args: --nce_k 4096}

A teacher the sweep trains is ``train_teacher.py --model <teacher> --dataset <d>`` with the grid's ``args``
and ``teacher_args``, read by its students from ``<its run folder>/<teacher>_last.pth`` (the last epoch,
as RepDistiller's published teachers); ``teacher_trial`` names its trial (default: train_teacher's).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from helper.errors import UserError
from sweep.runs import ROOT, describe

_KEYS = {"name", "datasets", "trials", "args", "teacher_args", "teacher_trial", "pairs", "methods"}
_WEIGHTS = (("r", "-r"), ("a", "-a"), ("b", "-b"), ("d", "-d"))


def read_grid(path: Path) -> dict[str, Any]:
    import yaml

    try:
        spec = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise UserError(f"{path}: expected a mapping with 'pairs' and 'methods'")
    spec.setdefault("name", path.stem)
    return spec


def words(value: Any, where: str) -> list[str]:
    """Arguments given as one string (split as a shell would) or as a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list):
        return [str(v) for v in value]
    raise UserError(f"{where}: expected a string or a list of arguments, got {value!r}")


def _trials(value: Any) -> list[str]:
    if value is None:
        return ["1"]
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise UserError(f"grid: trials must be at least 1, got {value}")
        return [str(t) for t in range(1, value + 1)]
    if isinstance(value, list) and value:
        return [str(t) for t in value]
    raise UserError(f"grid: trials is a count or a list of trial names, got {value!r}")


def method_args(method: Any, where: str) -> list[str]:
    """``--distill NAME`` and the weights and flags a grid's method entry gives (none: the registry's)."""
    if isinstance(method, str):
        return ["--distill", method]
    if not isinstance(method, dict) or "distill" not in method:
        raise UserError(f"{where}: a method is a name or a mapping with 'distill', got {method!r}")
    unknown = set(method) - {"distill", "args"} - {key for key, _ in _WEIGHTS}
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (distill, r, a, b, d, args)")
    args = ["--distill", str(method["distill"])]
    for key, flag in _WEIGHTS:
        if key in method:
            args += [flag, str(method[key])]
    return args + words(method.get("args"), where)


def grid_calls(spec: dict[str, Any], cwd: Path = ROOT) -> list[tuple[Path, list[str]]]:
    """(directory, arguments after ``python``) of every run of the grid: teachers it trains first."""
    unknown = set(spec) - _KEYS
    if unknown:
        raise UserError(f"grid: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_KEYS))})")
    pairs, methods = spec.get("pairs"), spec.get("methods")
    if not pairs or not methods:
        raise UserError("grid: needs a non-empty 'pairs' and 'methods'")
    datasets = spec.get("datasets") or ["cifar100"]
    datasets = [datasets] if isinstance(datasets, str) else datasets
    common = words(spec.get("args"), "grid args")
    teacher_extra = words(spec.get("teacher_args"), "grid teacher_args")
    if spec.get("teacher_trial") is not None:
        teacher_extra += ["--trial", str(spec["teacher_trial"])]
    teachers: list[tuple[Path, list[str]]] = []
    students: list[tuple[Path, list[str]]] = []
    for dataset in datasets:
        for p, pair in enumerate(pairs):
            if not isinstance(pair, dict) or not {"teacher", "student"} <= set(pair):
                raise UserError(f"grid pair {p + 1}: needs 'teacher' and 'student', got {pair!r}")
            path_t = pair.get("path_t")
            if path_t is None:
                args = ["train_teacher.py", "--model", str(pair["teacher"]), "--dataset", dataset,
                        *common, *teacher_extra]
                if (cwd, args) not in teachers:
                    teachers.append((cwd, args))
                folder = describe(args, cwd, f"grid teacher {pair['teacher']}").folder
                path_t = str(folder / f"{pair['teacher']}_last.pth")
            for m, method in enumerate(methods):
                margs = method_args(method, f"grid method {m + 1}")
                for trial in _trials(spec.get("trials")):
                    students.append((cwd, [
                        "train_student.py", "--path_t", str(path_t).format(dataset=dataset),
                        "--model_t", str(pair["teacher"]), "--model_s", str(pair["student"]),
                        "--dataset", dataset, *margs, "--trial", trial, *common]))
    return teachers + students
