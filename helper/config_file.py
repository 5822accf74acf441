"""``--config FILE``: options from a YAML or JSON file, under the command line.

The file's values become the parser's defaults, so a flag given on the command line still wins.
Keys are option names as in ``--help`` without the dashes (``learning_rate``, ``gamma`` for ``-r``).
A run's own ``config.json`` is accepted too: its ``options`` section is read, so a run can be repeated.
"""

from __future__ import annotations

import argparse
import difflib
import json
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
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
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
    return dict(data)


def _looks_json(text: str) -> bool:
    return text.lstrip().startswith("{")


def _option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}


def _convert(action: argparse.Action, key: str, value: Any) -> Any:
    """``value`` as the command line would have produced it, or a one-line ConfigError."""
    if value is None:
        return None
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


def config_defaults(parser: argparse.ArgumentParser, values: dict[str, Any]) -> dict[str, Any]:
    """Check every key against the parser's options and convert each value as its flag would."""
    actions = _option_actions(parser)
    defaults = {}
    for key, value in values.items():
        if key == "config":
            continue  # a run's own record of which file it read; files do not nest
        if key not in actions:
            close = difflib.get_close_matches(key, list(actions), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown option '{key}'{hint}")
        defaults[key] = _convert(actions[key], key, value)
    return defaults


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with ``--config FILE``'s options as defaults (file < command line)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is not None:
        try:
            parser.set_defaults(**config_defaults(parser, read_config_file(known.config)))
        except ConfigError as exc:
            parser.error(f"--config {known.config}: {exc}")
    return parser.parse_args(argv)
