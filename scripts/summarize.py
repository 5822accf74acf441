"""Tables across runs: mean ± std over trials, teacher and student-alone figures, published numbers beside.

    python scripts/summarize.py                       # every run under ./save, markdown on the terminal
    python scripts/summarize.py save/student_model/S:resnet8x4_* --layout crd --csv t.csv --latex t.tex

Runs are grouped by set-up: teacher, student, data set, method, -r/-a/-b, variant (the tags a run folder
carries for a method's non-default variant, DOT or logit standardisation) and every other setting in
config.json that changes the result (the data set's sizes and classes, epochs and schedule, batch size,
lr, weight decay, precision, method options...); runs that differ only in trial and seed are the trials
of one group, shown as mean ± sample std (n) of the last- and best-epoch test accuracy. Where groups
of the same method and pair differ in such settings, the table shows them. Runs of train_teacher.py
with the same data set and training settings are the "student alone" baselines, looked up among the
given runs and in --baselines (where train_teacher.py writes, save/models). Unfinished and failed runs
are listed apart and never averaged in; a folder that cannot be read is named on stderr and skipped.
RepDistiller's own run folders (checkpoints only) are read as far as they go.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helper.runs import NOT_SETUP, Run, canonical_method, find_run_folders, finite, read_runs, setup, variant_tags  # noqa: E402

PUBLISHED = Path(__file__).resolve().parents[1] / "docs" / "published_results.csv"


@dataclass
class Stat:
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1); None for a single run."""
        return statistics.stdev(self.values) if self.n > 1 else None

    def text(self, digits: int = 2) -> str:
        if not self.values:
            return "–"
        spread = f" ± {self.std:.{digits}f}" if self.std is not None else ""
        return f"{self.mean:.{digits}f}{spread} ({self.n})"


@dataclass
class Published:
    source: str
    reference: str
    label: str
    top1: float
    metric: str
    note: str


@dataclass
class Group:
    kind: str  # as Run.kind
    teacher: str | None
    student: str
    dataset: str
    method: str
    weights: tuple[float, float, float] | None
    variant: str = ""
    setup: dict = field(default_factory=dict)  # helper.runs.setup of every run in the group
    setup_text: str = ""  # the settings that tell it from groups of the same pair, method and weights
    runs: list[Run] = field(default_factory=list)
    alone: Stat | None = None  # the student architecture trained alone, same data set
    published: list[Published] = field(default_factory=list)  # best first
    published_alone: Published | None = None  # the student architecture trained alone
    published_teacher: Published | None = None  # the teacher architecture trained alone

    def stat(self, metric: str) -> Stat:
        return Stat([v for r in self.runs if finite(v := getattr(r, f"{metric}_acc"))])

    @property
    def teacher_acc(self) -> Stat:
        return Stat([r.teacher_acc for r in self.runs if finite(r.teacher_acc)])

    @property
    def epoch_time(self) -> Stat:
        return Stat([r.epoch_time for r in self.runs if finite(r.epoch_time)])

    @property
    def weights_text(self) -> str:
        return "" if self.weights is None else "r:{:g} a:{:g} b:{:g}".format(*self.weights)

    @property
    def method_text(self) -> str:
        """The method, with its variant tags when it is not the default variant."""
        return f"{self.method} [{self.variant}]" if self.variant else self.method

    @property
    def label(self) -> str:
        return self.method_text if self.weights is None else f"{self.method_text} ({self.weights_text})"

    @property
    def identity(self) -> tuple:
        """What the tables name a group by; groups that share it differ in their set-up."""
        return self.kind, self.teacher, self.student, self.dataset, self.method, self.weights, self.variant

    @property
    def training(self) -> dict:
        """The data set's and the schedule's settings: what a student-alone baseline must share."""
        return {k: v for k, v in self.setup.items() if k in training_keys()}


# Settings the tables already show as the group's name (pair, data set, method, weights).
NAMED_OPTIONS = frozenset({"model", "model_s", "model_t", "dataset", "distill", "gamma", "alpha", "beta"})


@functools.cache
def training_keys() -> frozenset[str]:
    """The data set and schedule flags that train_teacher.py and train_student.py share (helper.options)."""
    from helper.options import add_training_args

    parser = argparse.ArgumentParser(add_help=False)
    add_training_args(parser)
    return frozenset(a.dest for a in parser._actions) - NOT_SETUP | {"processes"}


def _canonical(settings: dict) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def _value_text(value) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def differing_keys(settings: list[dict]) -> list[str]:
    """The settings (beyond those the tables name) whose values differ between set-ups; one that a set-up
    does not record counts as '–'."""
    return sorted(k for k in set().union(*settings) - NAMED_OPTIONS
                  if len({_canonical({k: s.get(k, "–")}) for s in settings}) > 1)


def settings_text(settings: dict, keys: list[str]) -> str:
    """'epochs:30 syn_classes:100': the values of ``keys``."""
    return " ".join(f"{k}:{_value_text(settings.get(k, '–'))}" for k in keys)


def differing(settings: list[dict]) -> list[str]:
    """For each of several set-ups, the settings in which they differ."""
    keys = differing_keys(settings)
    return [settings_text(s, keys) for s in settings]


def build_groups(runs: list[Run]) -> list[Group]:
    """One group per set-up; the runs of a group differ only in what ``helper.runs.NOT_SETUP`` names."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        weights = tuple(round(w, 6) for w in run.weights) if run.weights else None
        settings = setup(run)
        key = (run.kind, run.teacher, run.model, run.dataset, run.method, weights, run.variant, _canonical(settings))
        if key not in groups:
            groups[key] = Group(run.kind, run.teacher, run.model, run.dataset, run.method, weights, run.variant,
                                settings)
        groups[key].runs.append(run)
    same: dict[tuple, list[Group]] = {}
    for g in groups.values():
        same.setdefault(g.identity, []).append(g)
    for alike in same.values():
        for g, text in zip(alike, differing([g.setup for g in alike]), strict=True):
            g.setup_text = "not recorded" if text and not g.setup else text
    return sorted(groups.values(), key=lambda g: (g.dataset, g.method != "vanilla", g.teacher or "", g.student,
                                                   g.method, g.weights or (), g.variant, g.setup_text))


# Variant tags that published tables tell apart (options of every method); a method's own variant tags
# (RRD's memory, MLKD's -d...) are grouped apart but matched to the method's published rows.
PUBLISHED_VARIANT_LABELS = ("optimizer", "ls")


def published_variant(variant: str) -> str:
    """The part of a run's variant tags that a published row's ``variant`` names (``optimizer:dot``, ``ls:True``)."""
    return "_".join(f"{label}:{value}" for label, value in variant_tags(variant) if label in PUBLISHED_VARIANT_LABELS)


def _agree(a: dict, b: dict) -> bool:
    """Equal in every setting both record (an older run records fewer)."""
    return all(_canonical({k: a[k]}) == _canonical({k: b[k]}) for k in a.keys() & b.keys())


def attach_alone(groups: list[Group], vanilla: list[Group], metric: str) -> None:
    """Each distillation group gets the train_teacher.py runs of its student architecture with the same data
    set and training settings: the group whose settings equal its own, else the one that agrees."""
    for g in groups:
        if g.kind != "student":
            continue
        alike = [v for v in vanilla
                 if (v.student, v.dataset) == (g.student, g.dataset) and _agree(v.training, g.training)]
        exact = [v for v in alike if _canonical(v.training) == _canonical(g.training)]
        match = exact[0] if exact else (alike[0] if len(alike) == 1 else None)
        if match is not None:
            g.alone = match.stat(metric)


# ----- published numbers ---------------------------------------------------------------------------
def read_published(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["method"] = canonical_method(row["method"]) if row["method"] != "vanilla" else "vanilla"
    return rows


def _published(row: dict) -> Published:
    return Published(row["source"], row["reference"], row["label"], float(row["top1"]), row["metric"], row["note"])


def attach_published(groups: list[Group], rows: list[dict], prefer: str | None) -> None:
    """Rows for the same data set, pair and method, and with the KD term on or off as ours (when they say).

    File order is the order of preference; ``prefer`` (a source name) moves that source's rows first.
    """
    if prefer:
        rows = sorted(rows, key=lambda r: r["source"].lower() != prefer.lower())
    vanilla: dict[tuple[str, str], Published] = {}
    for row in rows:
        if row["method"] == "vanilla":
            vanilla.setdefault((row["dataset"], row["student"]), _published(row))
    for g in groups:
        if g.kind == "transfer":
            continue
        kd_term = "yes" if g.weights and (g.weights[1] > 0 or g.method == "kd") else "no"
        variant = published_variant(g.variant)
        for row in rows:
            if (row["dataset"] != g.dataset or row["student"] != g.student or row["method"] != g.method
                    or row.get("variant", "") != variant):
                continue
            if g.method == "vanilla" or (row["teacher"] == g.teacher and row["kd_term"] in ("", kd_term)):
                g.published.append(_published(row))
        if g.method != "vanilla":
            g.published_alone = vanilla.get((g.dataset, g.student))
            g.published_teacher = vanilla.get((g.dataset, g.teacher))


def compared(g: Group, metric: str) -> tuple[Published | None, float | None]:
    """The preferred published figure and ours minus it (ours in the published figure's own metric)."""
    if not g.published:
        return None, None
    pub = g.published[0]
    ours = g.stat(pub.metric if pub.metric in ("last", "best") else metric).mean
    return pub, (None if ours is None else ours - pub.top1)


# ----- tables ----------------------------------------------------------------------------------------
def _num(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def flat_table(groups: list[Group], metric: str, with_published: bool) -> tuple[list[str], list[list[str]]]:
    """One row per group; a 'setup' column when groups of the same pair and method differ in their set-up."""
    with_setup = any(g.setup_text for g in groups)
    header = ["teacher", "student", "dataset", "method", "weights", *(["setup"] if with_setup else []), "last",
              "best", "teacher acc", f"student alone ({metric})", "s/epoch"]
    if with_published:
        header += ["published", "Δ published"]
    body = []
    for g in groups:
        row = [g.teacher or "–", g.student, g.dataset, g.method_text, g.weights_text or "–",
               *([g.setup_text or "–"] if with_setup else []), g.stat("last").text(),
               g.stat("best").text(), _num(g.teacher_acc.mean), g.alone.text() if g.alone else "–",
               _num(g.epoch_time.mean, 1)]
        if with_published:
            pub, diff = compared(g, metric)
            row += [f"{pub.top1:.2f} ({pub.source}, {pub.metric})" if pub else "–", _num(diff, sign=True)]
        body.append(row)
    return header, body


def crd_tables(groups: list[Group], metric: str, with_published: bool) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per data set: methods down, teacher → student pairs across, as the CRD paper's Tables 1-2; one table
    per training set-up where a pair was trained in several (other data set sizes, schedules...), so that a
    column's Teacher and Student alone rows come from the set-up of the rows below them."""
    distil = [g for g in groups if g.kind == "student"]
    per_pair: dict[tuple, list[dict]] = {}
    for g in distil:
        per_pair.setdefault((g.dataset, g.teacher, g.student), []).append(g.training)
    varying = {k for setups in per_pair.values() for k in differing_keys(setups)}
    tables: dict[tuple[str, str], list[Group]] = {}
    for g in distil:
        tables.setdefault((g.dataset, _canonical({k: g.training.get(k, "–") for k in varying})), []).append(g)
    titles = {}
    for dataset in sorted({d for d, _ in tables}):
        keys = [k for k in tables if k[0] == dataset]
        for key, text in zip(keys, differing([json.loads(k[1]) for k in keys]), strict=True):
            titles[key] = f"{dataset}{f' ({text})' if text else ''}"
    return [(f"{titles[key]}: test accuracy ({metric} epoch), mean ± std (n)"
             + (" [published]" if with_published else ""), *_crd_table(tables[key], metric, with_published))
            for key in sorted(tables, key=lambda k: titles[k])]


def _crd_table(distil: list[Group], metric: str, with_published: bool) -> tuple[list[str], list[list[str]]]:
    pairs = sorted({(g.teacher or "", g.student) for g in distil})
    per_method: dict[str, set] = {}
    for g in distil:
        per_method.setdefault(g.method, set()).add((g.weights, g.variant))
    base = {id(g): g.method if len(per_method[g.method]) == 1 else g.label for g in distil}
    label = {}
    for name in set(base.values()):  # a method trained in several set-ups for one pair: a row per set-up
        alike = [g for g in distil if base[id(g)] == name]
        per_pair: dict[tuple, list[dict]] = {}
        for g in alike:
            per_pair.setdefault((g.teacher, g.student), []).append(g.setup)
        keys = sorted({k for setups in per_pair.values() for k in differing_keys(setups)})
        for g in alike:
            label[id(g)] = f"{name} [{settings_text(g.setup, keys)}]" if keys else name
    cell = {(label[id(g)], (g.teacher or "", g.student)): g for g in distil}
    header = ["", *[f"{t} → {s}" for t, s in pairs]]
    first = {pair: next(g for g in distil if (g.teacher or "", g.student) == pair) for pair in pairs}
    teacher_acc = {pair: Stat([r.teacher_acc for g in distil if (g.teacher or "", g.student) == pair
                               for r in g.runs if finite(r.teacher_acc)]).mean for pair in pairs}
    teacher_row = ["Teacher", *[_num(teacher_acc[p]) for p in pairs]]
    alone_row = ["Student alone", *[first[p].alone.text() if first[p].alone else "–" for p in pairs]]
    if with_published:
        teacher_row = ["Teacher", *[_with_pub(_num(teacher_acc[p]), first[p].published_teacher) for p in pairs]]
        alone_row = ["Student alone", *[_with_pub(first[p].alone.text() if first[p].alone else "–",
                                                  first[p].published_alone) for p in pairs]]
    body = [teacher_row, alone_row]
    for row_label in sorted(set(label.values())):
        row = [row_label]
        for pair in pairs:
            g = cell.get((row_label, pair))
            text = g.stat(metric).text() if g else ""
            row.append(_with_pub(text, compared(g, metric)[0]) if g and with_published else text)
        body.append(row)
    return header, body


def _with_pub(text: str, pub: Published | None) -> str:
    return f"{text} [{pub.top1:.2f}]" if pub else text


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines)


def latex(header: list[str], body: list[list[str]], caption: str) -> str:
    def esc(text: str) -> str:
        text = text.replace("\\", "\\textbackslash{}")
        for char in "&%$#_{}":
            text = text.replace(char, "\\" + char)
        return text.replace("±", "$\\pm$").replace("→", "$\\rightarrow$").replace("Δ", "$\\Delta$").replace(
            "–", "--")

    lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{esc(caption)}}}",
             "\\begin{tabular}{l" + "c" * (len(header) - 1) + "}", "\\toprule",
             " & ".join(esc(h) for h in header) + " \\\\", "\\midrule"]
    lines += [" & ".join(esc(c) for c in row) + " \\\\" for row in body]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines)


def left_out_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    header = ["status", "run", "epochs", "last", "best", "why"]
    body = [[r.status, str(r.folder), f"{r.epochs_done if r.epochs_done is not None else '?'}/{r.epochs or '?'}",
             _num(r.last_acc), _num(r.best_acc), r.note] for r in runs]
    return header, body


def group_record(g: Group, metric: str) -> dict:
    pub, diff = compared(g, metric)
    last, best = g.stat("last"), g.stat("best")
    return {
        "teacher": g.teacher, "student": g.student, "dataset": g.dataset, "method": g.method,
        "weights": list(g.weights) if g.weights else None, "variant": g.variant, "setup": g.setup_text,
        "n": len(g.runs),
        "last_mean": last.mean, "last_std": last.std, "best_mean": best.mean, "best_std": best.std,
        "teacher_acc": g.teacher_acc.mean, "student_alone": g.alone.mean if g.alone else None,
        "student_alone_n": g.alone.n if g.alone else 0, "seconds_per_epoch": g.epoch_time.mean,
        "published": pub.top1 if pub else None, "published_metric": pub.metric if pub else None,
        "published_source": pub.source if pub else None, "published_reference": pub.reference if pub else None,
        "published_label": pub.label if pub else None, "published_diff": diff,
        "published_all": [vars(p) for p in g.published],
        "runs": [{"folder": str(r.folder), "trial": r.trial, "last": r.last_acc, "best": r.best_acc,
                  "source": r.source, "code": (r.config.get("code") or {}).get("git_commit")} for r in g.runs],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from helper.options import OneLineParser

    summary, _, details = __doc__.partition("\n\n")
    parser = OneLineParser(prog="summarize.py", description=summary, epilog=details,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path, help="run folders, or folders to search (default: ./save)")
    parser.add_argument("--layout", choices=["flat", "crd"], default="flat",
                        help="flat: one row per group; crd: methods down, teacher → student pairs across")
    parser.add_argument("--metric", choices=["last", "best"], default="last",
                        help="figure of the crd layout and of the student-alone column (RepDistiller's "
                             "README reports the last epoch)")
    parser.add_argument("--published", type=Path, default=PUBLISHED, help="published numbers (CSV)")
    parser.add_argument("--no-published", dest="with_published", action="store_false",
                        help="leave the published numbers out")
    parser.add_argument("--baselines", type=Path, default=Path("save/models"),
                        help="where train_teacher.py's runs are looked up for the student-alone figures when "
                             "they are not among the paths (default: save/models, where it writes them)")
    parser.add_argument("--source", default=None, help="prefer this source's published figure (e.g. CRD, KD-Zoo)")
    parser.add_argument("--csv", type=Path, help="write the groups as CSV (one row per group, numeric columns)")
    parser.add_argument("--json", type=Path, help="write groups, their runs and the runs left out as JSON")
    parser.add_argument("--latex", type=Path, help="write the table as a LaTeX tabular (booktabs)")
    return parser.parse_args(argv)


def baselines(folder: Path, given: list[Path]) -> list[Run]:
    """Finished runs where train_teacher.py writes (``folder``) that are not among the ``given`` folders."""
    if not folder.is_dir():
        return []
    seen = {f.resolve() for f in given}
    return [r for r in read_runs([f for f in find_run_folders([folder]) if f.resolve() not in seen], "summarize.py")
            if r.status == "finished"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = args.paths or [Path("save")]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"summarize.py: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    folders = find_run_folders(paths)
    runs = read_runs(folders, "summarize.py")
    done = [r for r in runs if r.status == "finished"]
    left_out = [r for r in runs if r.status != "finished"]
    if not runs:
        print(f"no readable run folders under {', '.join(map(str, paths))}")
        return 1
    groups = build_groups(done)
    attach_alone(groups, build_groups([r for r in done + baselines(args.baselines, folders) if r.kind == "vanilla"]),
                 args.metric)
    with_published = args.with_published and args.published.exists()
    if with_published:
        attach_published(groups, read_published(args.published), args.source)

    probes = [g for g in groups if g.kind == "transfer"]
    if args.layout == "crd":
        tables = crd_tables(groups, args.metric, with_published)
        if probes:
            tables.append(("Linear probes (transfer_student.py): test accuracy (%), mean ± std (n)",
                           *flat_table(probes, args.metric, with_published)))
    else:
        tables = [("Test accuracy (%): mean ± std (n) over trials", *flat_table(groups, args.metric, with_published))]
    for title, header, body in tables:
        print(f"{title}\n\n{markdown(header, body)}\n")
    if left_out:
        print("\nNot averaged in (unfinished or failed):\n")
        print(markdown(*left_out_table(left_out)))

    if args.csv:
        records = [group_record(g, args.metric) for g in groups]
        columns = [k for k in records[0] if k not in ("runs", "published_all")] if records else []
        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for record in records:
                writer.writerow({k: ("/".join(f"{w:g}" for w in v) if k == "weights" and v else v)
                                 for k, v in record.items()})
    if args.json:
        args.json.write_text(json.dumps({
            "metric": args.metric, "groups": [group_record(g, args.metric) for g in groups],
            "left_out": [{"folder": str(r.folder), "status": r.status, "epochs_done": r.epochs_done,
                          "epochs": r.epochs, "last": r.last_acc, "best": r.best_acc, "note": r.note}
                         for r in left_out]}, indent=1) + "\n")
    if args.latex:
        args.latex.write_text("\n\n".join(latex(header, body, title) for title, header, body in tables) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
