"""Each run's state and what to do with it: skip a done run, resume a partial one, start a new one; a failed
one is reported with its last line (and retried only when asked)."""

from __future__ import annotations

from dataclasses import dataclass

from sweep.record import Record
from sweep.runs import Run, resume_args, state


@dataclass
class Item:
    index: int
    run: Run
    status: str  # done, partial, failed, new
    note: str
    args: list[str] | None  # what to start it with; None: not to be started

    @property
    def action(self) -> str:
        if self.args is None:
            return "skip"
        return "resume" if self.status == "partial" else ("retry" if self.status == "failed" else "start")


def plan(runs: list[Run], record: Record, retry_failed: bool = False) -> list[Item]:
    items = []
    for i, run in enumerate(runs):
        on_disk, note = state(run)
        status, failure = on_disk, record.failure(run)
        if on_disk != "done" and failure:  # its latest attempt exited with an error
            status, note = "failed", failure
        if status == "failed" and not retry_failed:
            args = None
        else:  # a crashed run starts or resumes as its folder allows; a non-finite one starts over
            args = resume_args(run, on_disk, retry_failed)
        items.append(Item(i, run, status, note, args))
    return items


def table(items: list[Item]) -> str:
    """The dry-run listing: one line per run, its state, the action and its folder, then the command."""
    lines = []
    for item in items:
        needs = f" after #{',#'.join(str(j + 1) for j in item.run.needs)}" if item.run.needs else ""
        note = f" ({item.note})" if item.note else ""
        folder = item.run.folder or item.run.name
        lines.append(f"#{item.index + 1:<3} {item.status:<7} {item.action:<6} {folder}{needs}{note}")
        lines.append(f"       python {' '.join(_short(a) for a in item.args or item.run.args)}")
    counts = {s: sum(i.status == s for i in items) for s in ("done", "partial", "failed", "new")}
    lines.append(f"{len(items)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def _short(arg: str) -> str:
    from sweep.runs import ROOT

    return arg[len(str(ROOT)) + 1:] if arg.startswith(str(ROOT) + "/") else arg
