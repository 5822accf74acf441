"""``--report``: scripts/summarize.py's table of the sweep's run folders with the published numbers beside ours,
then each cell that is off its published figure: our mean more than 2 standard deviations from it, or, with
a single trial, more than 1 point. summarize.py is run as a program (its ``--json`` output is read back), so
its grouping and published-figure matching are the only ones."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from sweep.runs import ROOT

SUMMARIZE = ROOT / "scripts" / "summarize.py"
ONE_TRIAL_POINTS = 1.0
STDS = 2.0


def _metric(group: dict) -> str:
    """The figure the published one is compared with (summarize compares in the published figure's metric)."""
    return group["published_metric"] if group.get("published_metric") in ("last", "best") else "last"


def off_published(group: dict) -> str | None:
    """Why this group's mean is off its published figure, or None when it is within reach (or has none)."""
    diff, n = group.get("published_diff"), group.get("n") or 0
    if diff is None or n == 0:
        return None
    if n == 1:
        return f"{diff:+.2f} points with one trial" if abs(diff) > ONE_TRIAL_POINTS else None
    std = group.get(f"{_metric(group)}_std")
    if std is None:
        return None
    return f"{diff:+.2f} points, {abs(diff) / std:.1f} std" if abs(diff) > STDS * std else None


def report(folders: list[Path], source: str | None, layout: str, cwd: Path, python: str = sys.executable) -> int:
    folders = [f for f in folders if f.is_dir()]
    if not folders:
        print("sweep: no run folder of this sweep exists yet: nothing to report")
        return 1
    with tempfile.TemporaryDirectory(prefix="sweep_report_") as tmp:
        out = Path(tmp, "groups.json")
        command = [python, str(SUMMARIZE), *map(str, folders), "--layout", layout, "--json", str(out)]
        if source:
            command += ["--source", source]
        proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
        print(proc.stdout, end="")
        print(proc.stderr, end="", file=sys.stderr)
        if proc.returncode != 0 or not out.exists():
            return proc.returncode or 1
        groups = json.loads(out.read_text())["groups"]
    marks = []
    for g in groups:
        why = off_published(g)
        if why:
            weights = "/".join(f"{w:g}" for w in g["weights"]) if g.get("weights") else ""
            marks.append(f"  ! {g['teacher']} -> {g['student']} {g['method']} {weights}: ours "
                         f"{g[_metric(g) + '_mean']:.2f} vs published {g['published']:.2f} "
                         f"({g['published_source']}, {g['published_metric']}): {why}")
    compared = sum(g.get("published") is not None for g in groups)
    print(f"Against the published figures ({compared} of {len(groups)} cells have one; marked: more than "
          f"{STDS:g} std off, or {ONE_TRIAL_POINTS:g} point with one trial):")
    print("\n".join(marks) if marks else "  none off")
    return 0
