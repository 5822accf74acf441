"""``--compile`` and ``--compile_mode``: the flags and their values, importable without torch so that a usage
error is reported before the heavy imports (helper/compile.py acts on them)."""

from __future__ import annotations

import argparse

SETTINGS = ("auto", "on", "off")
MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
_ALIASES = {"true": "on", "yes": "on", "1": "on", "false": "off", "no": "off", "0": "off", "none": "off"}

#: Planned training steps from which ``auto`` compiles, per device type: where the time a step saves,
#: times the steps, outweighs the cold compile (docs/benchmark.md, "When compiling pays").
PAYS_FROM_STEPS = {"cpu": 3000, "cuda": 3000}


def compile_setting(value: object) -> str:
    """``auto``, ``on`` or ``off`` from a flag or config value (older run configs stored true/false)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value).strip().lower()
    text = _ALIASES.get(text, text)
    if text not in SETTINGS:
        raise ValueError(f"--compile takes auto, on or off, not {value!r}")
    return text


class CompileFlag(argparse.Action):
    """``--compile [auto|on|off]``: the flag alone means on, as before it took a value."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            setattr(namespace, self.dest, compile_setting(values))
        except ValueError as exc:
            parser.error(str(exc))


def add_compile_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--compile", action=CompileFlag, nargs="?", const="on", default="auto",
                       metavar="{auto,on,off}",
                       help="torch.compile the student and the frozen teacher: auto (default) where the run is "
                            f"long enough to win the compile time back (from {PAYS_FROM_STEPS['cpu']:,} steps) "
                            "and the method allows it; --compile alone means on")
    group.add_argument("--compile_mode", default="default", choices=MODES,
                       help="torch.compile's mode (default: fusion without CUDA graphs or autotuning; "
                            "see docs/benchmark.md)")
