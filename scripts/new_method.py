"""Start a new distillation method from one of docs/adding_a_method.md's three examples.

    python scripts/new_method.py mykd --kind logit      # or feature, hooks

writes distiller_zoo/Mykd.py (registered: the registry imports every module of the package) and
tests/test_method_mykd.py. Both run as written, and the method passes tests/test_conformance.py; TODOs
mark where its maths goes. Then: python train_student.py --distill mykd ...
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distiller_zoo.registry import get_method  # noqa: E402
from helper.errors import UserError, run_cli  # noqa: E402
from helper.options import OneLineParser  # noqa: E402

TEMPLATES = Path(__file__).resolve().parent / "method_templates"
KINDS = ("logit", "feature", "hooks")
NAME = re.compile(r"[a-z][a-z0-9_]*")


def class_name(name: str) -> str:
    """``my_kd`` -> ``MyKd``: the module's and the class's name."""
    return "".join(part.capitalize() for part in name.split("_") if part)


def check_name(name: str, root: Path) -> None:
    """A new, usable ``--distill`` name, whose files do not exist yet (whatever the case of their names)."""
    if not NAME.fullmatch(name):
        raise UserError(f"'{name}' is not a method name: lower-case letters, digits and '_', starting with a letter")
    try:
        spec = get_method(name)
    except ValueError:
        spec = None
    if spec is not None:
        raise UserError(f"--distill {name} is taken by the registered method '{spec.name}'; choose another name")
    targets = [root / "distiller_zoo" / f"{class_name(name)}.py", root / "tests" / f"test_method_{name}.py"]
    for target in targets:
        taken = [p for p in target.parent.glob("*.py") if p.name.lower() == target.name.lower()]
        if taken:
            raise UserError(f"{taken[0]} exists already; choose another name")


def write_method(name: str, kind: str, root: Path) -> list[Path]:
    """The method's module and its test, from the ``kind`` example with ``mymethod`` renamed."""
    check_name(name, root)
    written = []
    for template, target in ((f"{kind}.py", root / "distiller_zoo" / f"{class_name(name)}.py"),
                             (f"test_{kind}.py", root / "tests" / f"test_method_{name}.py")):
        text = (TEMPLATES / template).read_text().replace("MyMethod", class_name(name)).replace("mymethod", name)
        target.write_text(text)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="new_method.py", description="start a new method from an example")
    parser.add_argument("name", help="its --distill name (lower case, digits and '_')")
    parser.add_argument("--kind", choices=KINDS, default="logit",
                        help="logit: a loss on logits and a temperature flag; feature: a trainable connector on a "
                             "feature map; hooks: an extra pass of both networks on a second view")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository to write into (default: this one)")
    opt = parser.parse_args(argv)
    for path in write_method(opt.name, opt.kind, opt.root):
        print(f"wrote {path}")
    print(f"next: python train_student.py --distill {opt.name} --path_t <teacher> ...; "
          f"tests: python -m pytest tests/test_method_{opt.name}.py tests/test_conformance.py -k {opt.name}")


if __name__ == "__main__":
    run_cli(main)
