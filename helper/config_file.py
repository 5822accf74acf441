"""``--config FILE``: options from a YAML or JSON file, under the command line.

The file's values become the parser's defaults, so a flag given on the command line still wins.
Keys are option names as in ``--help`` without the dashes (``learning_rate``, ``gamma`` for ``-r``).
A run's own ``config.json`` is accepted too: its ``options`` section is read, so a run can be repeated.
Scripts that read a trained network (eval_student, the figures) take that run's data set from it the same way.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

# Flags whose value is a yes/no switch rather than a typed argument.
_SWITCHES = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)


class ConfigError(ValueError):
    """A config file that cannot be read or holds an option the script does not have."""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The option mapping in ``path`` (``.json``, ``.yaml``/``.yml``; other names: JSON, then YAML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not a text file (byte {exc.start} is not UTF-8): give a YAML or JSON file") \
            from None
    if path.suffix.lower() == ".json" or (path.suffix.lower() not in (".yaml", ".yml") and _looks_json(text)):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    else:
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"reading {path} needs PyYAML (pip install pyyaml), or give a .json file") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of option names to values, not a {type(data).__name__}")
    if isinstance(data.get("options"), dict) and "command" in data:  # a run folder's config.json
        data = data["options"]
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"option names are words such as 'epochs', not {key!r} ({type(key).__name__})")
    return dict(data)


def _looks_json(text: str) -> bool:
    return text.lstrip().startswith("{")


def _option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}


def _convert(action: argparse.Action, key: str, value: Any) -> Any:
    """``value`` as the command line would have produced it, or a one-line ConfigError.

    null stands for the default where that is None (a run's config.json records unset options so); an option
    with a value of its own by default has no null form on the command line either."""
    if value is None:
        if action.default is None:
            return None
        raise ConfigError(f"option '{key}' is null: give a value, or leave it out for its default")
    if isinstance(action, _SWITCHES):
        if not isinstance(value, bool):
            raise ConfigError(f"option '{key}' is a switch: give true or false, not {value!r}")
        return value
    if isinstance(value, list) and action.nargs not in (None, "?"):  # a flag taking several values
        return [_convert_one(action, key, v) for v in value]
    return _convert_one(action, key, ",".join(map(str, value)) if isinstance(value, list) else value)


def _convert_one(action: argparse.Action, key: str, value: Any) -> Any:
    text = str(value)
    if isinstance(value, bool) and action.type is not None:
        raise ConfigError(f"option '{key}': {value!r} is not a valid value")
    converted = text
    if action.type is float and isinstance(value, int):
        converted = value  # 1 stays 1, so that a run repeated from its config.json gets the same folder (r:1)
    elif action.type is not None:
        try:
            converted = action.type(text)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            detail = f" ({exc})" if isinstance(exc, argparse.ArgumentTypeError) else ""
            raise ConfigError(f"option '{key}': {value!r} is not a valid value{detail}") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"option '{key}': {value!r} is not one of {choices}")
    return converted


def config_defaults(parser: argparse.ArgumentParser, values: dict[str, Any], known_only: bool = False
                    ) -> dict[str, Any]:
    """Check every key against the parser's options and convert each value as its flag would (``known_only``:
    skip the keys the parser does not have yet, as the early check does for the registry's flags)."""
    actions = _option_actions(parser)
    defaults = {}
    for key, value in values.items():
        if key == "config" or (known_only and key not in actions):
            continue  # "config": a run's own record of which file it read; files do not nest
        if key not in actions:
            close = difflib.get_close_matches(key, list(actions), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown option '{key}'{hint}")
        defaults[key] = _convert(actions[key], key, value)
    return defaults


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None = None, known_only: bool = False
                      ) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with ``--config FILE``'s options as defaults (file < command line);
    ``known_only``: the options the parser has, leaving other flags and keys for a fuller parser."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is not None:
        try:
            parser.set_defaults(**config_defaults(parser, read_config_file(known.config), known_only))
        except ConfigError as exc:
            parser.error(f"--config {known.config}: {exc}")
    return parser.parse_known_args(argv)[0] if known_only else parser.parse_args(argv)


def _data_dests(parser: argparse.ArgumentParser) -> list[str]:
    """The options of the parser's 'data' group (dataset.add_data_args) that decide which images are read."""
    group = next((g for g in parser._action_groups if g.title == "data"), None)
    return [a.dest for a in (group._group_actions if group else []) if a.dest != "num_workers"]


def _run_options(paths: list[str]) -> tuple[Path | None, dict[str, Any]]:
    """The first run's config.json among ``paths`` (model files or run folders) and its options."""
    for path in map(Path, paths):
        config = (path if path.is_dir() else path.parent) / "config.json"
        if config.is_file():
            try:
                return config, read_config_file(config)
            except ConfigError as exc:
                print(f"note: {exc}; its data set is not read", file=sys.stderr)
    return None, {}


def parse_with_run_data(parser: argparse.ArgumentParser, argv: list[str] | None, path_flags: tuple[str, ...]
                        ) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with the data set of the run that ``path_flags`` name (the first with a
    config.json beside its model file) as defaults, so a run is evaluated or plotted on the images it was
    trained and tested on without retyping them; a flag on the command line wins. Prints in one line what
    was taken from the run. A different ``--dataset`` on the command line takes nothing from it."""
    dests = _data_dests(parser)
    unset = object()  # argparse leaves a non-string default as it is: still this object = not on the command line
    defaults = {dest: parser.get_default(dest) for dest in dests}
    parser.set_defaults(**dict.fromkeys(dests, unset))
    try:
        opt = parser.parse_args(argv)
    finally:
        parser.set_defaults(**defaults)
    given = {dest for dest in dests if getattr(opt, dest) is not unset}
    config, options = _run_options([getattr(opt, flag) for flag in path_flags if getattr(opt, flag, None)])
    if "dataset" in given and options.get("dataset") != opt.dataset:
        options = {}  # another data set than the run's: none of its settings apply
    try:
        taken = config_defaults(parser, {k: v for k, v in options.items() if k in dests and k not in given})
    except ConfigError as exc:
        parser.error(f"{config}: {exc}")
    for dest in dests:
        if dest not in given:
            setattr(opt, dest, taken.get(dest, defaults[dest]))
    shown = [f"--{k} {v}" for k, v in taken.items() if k == "dataset" or v != defaults[k]]
    if shown:
        print(f"data set from {config}: {' '.join(shown)}")
    return opt
