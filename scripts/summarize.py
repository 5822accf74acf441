"""Tables across runs: mean ± std over trials, teacher and student-alone figures, published numbers beside.

    python scripts/summarize.py                       # every run under ./save, markdown on the terminal
    python scripts/summarize.py save/student_model/S:resnet8x4_* --layout crd --csv t.csv --latex t.tex

Runs are grouped by (teacher, student, data set, method, -r/-a/-b, variant: the tags a run folder carries
for a method's non-default variant, DOT or logit standardisation); each group shows the last- and
best-epoch test accuracy as mean ± sample std (n). Runs of train_teacher.py are the "student alone"
baselines of the same architecture and data set. Unfinished and failed runs are listed apart and
never averaged in. RepDistiller's own run folders (checkpoints only) are read as far as they go.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helper.runs import Run, canonical_method, find_run_folders, finite, read_run, variant_tags  # noqa: E402

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
    teacher: str | None
    student: str
    dataset: str
    method: str
    weights: tuple[float, float, float] | None
    variant: str = ""
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
    def pair(self) -> str:
        return f"{self.teacher} → {self.student}" if self.teacher else self.student

    @property
    def method_text(self) -> str:
        """The method, with its variant tags when it is not the default variant."""
        return f"{self.method} [{self.variant}]" if self.variant else self.method

    @property
    def label(self) -> str:
        return self.method_text if self.weights is None else f"{self.method_text} ({self.weights_text})"

    def differing_options(self) -> list[str]:
        """Options (beyond bookkeeping) whose values differ between the group's runs."""
        ignored = {"trial", "seed", "print_freq", "save_freq", "num_workers", "device", "resume", "overwrite",
                   "data_folder", "path_t", "tb_freq", "loader", "compile", "config", "init_s"}
        keys = set().union(*(r.options for r in self.runs)) - ignored
        return sorted(k for k in keys if len({json.dumps(r.options.get(k), sort_keys=True, default=str)
                                               for r in self.runs}) > 1)


def group_key(run: Run) -> tuple:
    weights = tuple(round(w, 6) for w in run.weights) if run.weights else None
    return run.teacher, run.model, run.dataset, run.method, weights, run.variant


def build_groups(runs: list[Run]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for run in runs:
        key = group_key(run)
        if key not in groups:
            groups[key] = Group(run.teacher, run.model, run.dataset, run.method, key[4], run.variant)
        groups[key].runs.append(run)
    return sorted(groups.values(), key=lambda g: (g.dataset, g.method != "vanilla", g.teacher or "", g.student,
                                                   g.method, g.weights or (), g.variant))


# Variant tags that published tables tell apart (options of every method); a method's own variant tags
# (RRD's memory, MLKD's -d...) are grouped apart but matched to the method's published rows.
PUBLISHED_VARIANT_LABELS = ("optimizer", "ls")


def published_variant(variant: str) -> str:
    """The part of a run's variant tags that a published row's ``variant`` names (``optimizer:dot``, ``ls:True``)."""
    return "_".join(f"{label}:{value}" for label, value in variant_tags(variant) if label in PUBLISHED_VARIANT_LABELS)


def attach_alone(groups: list[Group], metric: str) -> None:
    """Each distillation group gets the vanilla runs of its student architecture on the same data set."""
    vanilla = {(g.student, g.dataset): g for g in groups if g.method == "vanilla"}
    for g in groups:
        if g.method != "vanilla" and (g.student, g.dataset) in vanilla:
            g.alone = vanilla[(g.student, g.dataset)].stat(metric)


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
    header = ["teacher", "student", "dataset", "method", "weights", "last", "best", "teacher acc",
              f"student alone ({metric})", "s/epoch"]
    if with_published:
        header += ["published", "Δ published"]
    body = []
    for g in groups:
        row = [g.teacher or "–", g.student, g.dataset, g.method_text, g.weights_text or "–", g.stat("last").text(),
               g.stat("best").text(), _num(g.teacher_acc.mean), g.alone.text() if g.alone else "–",
               _num(g.epoch_time.mean, 1)]
        if with_published:
            pub, diff = compared(g, metric)
            row += [f"{pub.top1:.2f} ({pub.source}, {pub.metric})" if pub else "–", _num(diff, sign=True)]
        body.append(row)
    return header, body


def crd_tables(groups: list[Group], metric: str, with_published: bool) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per data set: methods down, teacher → student pairs across, as the CRD paper's Tables 1-2."""
    tables = []
    for dataset in sorted({g.dataset for g in groups}):
        distil = [g for g in groups if g.dataset == dataset and g.method != "vanilla"]
        if not distil:
            continue
        pairs = sorted({(g.teacher, g.student) for g in distil})
        per_method: dict[str, set] = {}
        for g in distil:
            per_method.setdefault(g.method, set()).add((g.weights, g.variant))
        labels = sorted({g.method if len(per_method[g.method]) == 1 else g.label for g in distil})
        cell: dict[tuple[str, tuple], Group] = {}
        for g in distil:
            cell[(g.method if len(per_method[g.method]) == 1 else g.label, (g.teacher, g.student))] = g
        header = ["", *[f"{t} → {s}" for t, s in pairs]]
        first = {pair: next(g for g in distil if (g.teacher, g.student) == pair) for pair in pairs}
        teacher_acc = {pair: Stat([r.teacher_acc for g in distil if (g.teacher, g.student) == pair
                                   for r in g.runs if finite(r.teacher_acc)]).mean for pair in pairs}
        teacher_row = ["Teacher", *[_num(teacher_acc[p]) for p in pairs]]
        alone_row = ["Student alone", *[first[p].alone.text() if first[p].alone else "–" for p in pairs]]
        if with_published:
            teacher_row = ["Teacher", *[_with_pub(_num(teacher_acc[p]), first[p].published_teacher)
                                        for p in pairs]]
            alone_row = ["Student alone", *[_with_pub(first[p].alone.text() if first[p].alone else "–",
                                                      first[p].published_alone) for p in pairs]]
        body = [teacher_row, alone_row]
        for label in labels:
            row = [label]
            for pair in pairs:
                g = cell.get((label, pair))
                text = g.stat(metric).text() if g else ""
                row.append(_with_pub(text, compared(g, metric)[0]) if g and with_published else text)
            body.append(row)
        tables.append((f"{dataset}: test accuracy ({metric} epoch), mean ± std (n)"
                       + (" [published]" if with_published else ""), header, body))
    return tables


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
        "weights": list(g.weights) if g.weights else None, "variant": g.variant, "n": len(g.runs),
        "last_mean": last.mean, "last_std": last.std, "best_mean": best.mean, "best_std": best.std,
        "teacher_acc": g.teacher_acc.mean, "student_alone": g.alone.mean if g.alone else None,
        "student_alone_n": g.alone.n if g.alone else 0, "seconds_per_epoch": g.epoch_time.mean,
        "published": pub.top1 if pub else None, "published_metric": pub.metric if pub else None,
        "published_source": pub.source if pub else None, "published_reference": pub.reference if pub else None,
        "published_label": pub.label if pub else None, "published_diff": diff,
        "published_all": [vars(p) for p in g.published], "differing_options": g.differing_options(),
        "runs": [{"folder": str(r.folder), "trial": r.trial, "last": r.last_acc, "best": r.best_acc,
                  "source": r.source, "code": (r.config.get("code") or {}).get("git_commit")} for r in g.runs],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("paths", nargs="*", type=Path, help="run folders, or folders to search (default: ./save)")
    parser.add_argument("--layout", choices=["flat", "crd"], default="flat",
                        help="flat: one row per group; crd: methods down, teacher → student pairs across")
    parser.add_argument("--metric", choices=["last", "best"], default="last",
                        help="figure of the crd layout and of the student-alone column (RepDistiller's "
                             "README reports the last epoch)")
    parser.add_argument("--published", type=Path, default=PUBLISHED, help="published numbers (CSV)")
    parser.add_argument("--no-published", dest="with_published", action="store_false",
                        help="leave the published numbers out")
    parser.add_argument("--source", default=None, help="prefer this source's published figure (e.g. CRD, KD-Zoo)")
    parser.add_argument("--csv", type=Path, help="write the groups as CSV (one row per group, numeric columns)")
    parser.add_argument("--json", type=Path, help="write groups, their runs and the runs left out as JSON")
    parser.add_argument("--latex", type=Path, help="write the table as a LaTeX tabular (booktabs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = args.paths or [Path("save")]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"summarize.py: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    runs = [read_run(folder) for folder in find_run_folders(paths)]
    done = [r for r in runs if r.status == "finished"]
    left_out = [r for r in runs if r.status != "finished"]
    if not runs:
        print(f"no run folders under {', '.join(map(str, paths))}")
        return 1
    groups = build_groups(done)
    attach_alone(groups, args.metric)
    with_published = args.with_published and args.published.exists()
    if with_published:
        attach_published(groups, read_published(args.published), args.source)

    if args.layout == "crd":
        tables = crd_tables(groups, args.metric, with_published)
    else:
        tables = [("Test accuracy (%): mean ± std (n) over trials", *flat_table(groups, args.metric, with_published))]
    for title, header, body in tables:
        print(f"{title}\n\n{markdown(header, body)}\n")
    for g in groups:
        differ = g.differing_options()
        if differ:
            print(f"note: the runs of {g.pair} {g.label} differ in {', '.join(differ)}")
    if left_out:
        print("\nNot averaged in (unfinished or failed):\n")
        print(markdown(*left_out_table(left_out)))

    if args.csv:
        records = [group_record(g, args.metric) for g in groups]
        columns = [k for k in records[0] if k not in ("runs", "published_all", "differing_options")] if records else []
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
