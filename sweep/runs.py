"""One run of a sweep: its command line, the run folder its entry point will write (named by the entry point's
own option parser and helper.naming, never a copy of the rules), the runs it needs first, and its state."""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

from helper.errors import UserError
from helper.runs import read_run

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ("train_teacher.py", "train_student.py", "transfer_student.py", "datafree_kd.py")
RESUME_FILE = "ckpt_last.pth"
# options naming a file another run of the sweep may write: the run that writes it goes first
_INPUT_OPTIONS = ("path_t", "init_s", "path_s", "teacher_ckpt")


@dataclass
class Run:
    """A command line of one of our entry points, where it runs, and what it writes."""

    args: list[str]  # everything after `python`: a launcher's own arguments (-m torch.distributed.run ...) first
    cwd: Path
    entry: str  # one of ENTRY_POINTS
    folder: Path | None = None  # None where it cannot be told before another run has written its input
    inputs: list[Path] = field(default_factory=list)  # files it reads that a run of the sweep may write
    needs: list[int] = field(default_factory=list)  # indices of the runs that write them
    note: str = ""

    @property
    def name(self) -> str:
        return self.folder.name if self.folder else f"{self.entry} (folder once its input exists)"

    def command(self, python: str = sys.executable) -> list[str]:
        return [python, *self.args]


def entry_index(args: list[str]) -> int:
    """Where the entry point sits in ``args`` (after any launcher arguments)."""
    for i, arg in enumerate(args):
        if Path(arg).name in ENTRY_POINTS:
            return i
    raise UserError(f"not a command of our entry points ({', '.join(ENTRY_POINTS)}): python {' '.join(args)}")


def _options(entry: str, argv: list[str]) -> argparse.Namespace:
    """The entry point's parsed options (its parser validates them); where its folder goes in ``opt.folder``."""
    if entry == "train_teacher.py":
        import train_teacher

        opt = train_teacher.parse_option(argv)
        opt.folder = opt.save_folder
    elif entry == "train_student.py":
        import train_student
        from helper.naming import student_run_name

        opt, spec = train_student.parse_option(argv)
        if opt.model_t is None and opt.path_t is not None:
            checkpoint = {}
            if Path(opt.path_t).is_file():  # a published teacher whose folder name does not say its architecture
                from helper.checkpoint import safe_load

                checkpoint = safe_load(opt.path_t)
            opt.model_t = train_student.teacher_arch(opt, checkpoint)
        opt.folder = str(Path(opt.model_path) / student_run_name(opt))
    elif entry == "transfer_student.py":
        import transfer_student

        if not Path(_value(argv, "--path_s") or "").exists():
            opt = argparse.Namespace(folder=None, path_s=_value(argv, "--path_s"))
        else:
            opt, _ = transfer_student.parse_option(argv)
            opt.folder = opt.save_folder
    else:
        from datafree.options import parse_option
        from datafree.run import run_name

        opt = parse_option(argv)
        opt.folder = str(Path(opt.model_path) / run_name(opt))
    return opt


def _value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def describe(args: list[str], cwd: Path, where: str = "") -> Run:
    """A Run from its command line (without ``python``), its options checked by the entry point's parser.

    A bad line is one UserError naming ``where`` (e.g. ``scripts/run_x.sh, run 3``) and the parser's message."""
    i = entry_index(args)
    entry = Path(args[i]).name
    if not (ROOT / entry).is_file():
        raise UserError(f"{where}: {entry} is not in {ROOT}")
    args = [*args[:i], str(ROOT / entry), *args[i + 1:]]
    err = io.StringIO()
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            opt = _options(entry, args[i + 1:])
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        raise UserError(f"{where}: {lines[-1] if lines else 'the options do not parse'}") from None
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    folder = (cwd / opt.folder).resolve() if opt.folder else None
    inputs = [(cwd / value).resolve() for name in _INPUT_OPTIONS if (value := getattr(opt, name, None))]
    return Run(args=args, cwd=cwd, entry=entry, folder=folder, inputs=inputs)


def link(runs: list[Run]) -> None:
    """Each run's ``needs``: the runs whose folder holds a file it reads (a student's teacher, its --init_s)."""
    by_folder = {run.folder: i for i, run in enumerate(runs) if run.folder is not None}
    for run in runs:
        run.needs = sorted({by_folder[p.parent] for p in run.inputs if p.parent in by_folder})
    for i, run in enumerate(runs):
        if i in run.needs:
            raise UserError(f"{run.name}: reads a file from its own run folder")
    _check_acyclic(runs)


def _check_acyclic(runs: list[Run]) -> None:
    state: dict[int, int] = {}  # 1 visiting, 2 done

    def visit(i: int) -> None:
        if state.get(i) == 2:
            return
        if state.get(i) == 1:
            raise UserError(f"runs depend on each other in a cycle ({runs[i].name})")
        state[i] = 1
        for j in runs[i].needs:
            visit(j)
        state[i] = 2

    for i in range(len(runs)):
        visit(i)


def state(run: Run) -> tuple[str, str]:
    """``done``, ``partial`` (stopped; resumes from its checkpoint), ``failed`` (results with no finite accuracy)
    or ``new``, and a note, read from the run folder by helper.runs."""
    if run.folder is None or not run.folder.is_dir():
        return "new", ""
    found = read_run(run.folder)
    if found.status == "finished":
        return "done", f"best {found.best_acc:.2f}" if found.best_acc is not None else ""
    if found.status == "failed" and (run.folder / "results.json").exists():
        return "failed", found.note
    if (run.folder / RESUME_FILE).exists():
        return "partial", found.note
    return "new", ""


def resume_args(run: Run, status: str, retry_failed: bool = False) -> list[str] | None:
    """The arguments to start the run with in its state; None where it is not to be started."""
    if status == "done" or (status == "failed" and not retry_failed):
        return None
    if status == "partial":
        return [*run.args, "--resume"]
    if status == "failed":
        return [*run.args, "--overwrite"]
    return list(run.args)
