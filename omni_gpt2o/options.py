"""Config fields that are also command-line flags: the default, help text and range live in one place.

    learning_rate: float = option(1e-3, "peak learning rate", positive=True, aliases=("--lr",))

`add_flags(parser, TrainConfig)` turns every such field into `--learning-rate` (with its `--learning_rate` twin),
typed from the field's annotation and checked against its range; `from_flags` builds the config back.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import typing
from collections.abc import Sequence
from typing import Any


def option(default: Any = dataclasses.MISSING, help: str = "", *, positive: bool = False, minimum: float | None = None,
           maximum: float | None = None, choices: Sequence[str] | None = None, aliases: Sequence[str] = (),
           flag: bool = True) -> Any:
    """A dataclass field that is also a flag. No default: a required flag. `positive`: > 0; `minimum`/`maximum`:
    >= / <= it (a float must also be finite); `flag=False`: set from Python only."""
    meta = {"help": help, "positive": positive, "minimum": minimum, "maximum": maximum, "choices": choices,
            "aliases": tuple(aliases), "flag": flag}
    return dataclasses.field(default=default, metadata=meta)


def add_flags(parser: argparse.ArgumentParser, config_class: type) -> None:
    """A --kebab-case flag (and its --snake_case twin, the original prototype's spelling) per flag field."""
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        meta = f.metadata
        if not meta.get("flag", False):
            continue
        kind = _base_type(hints[f.name])
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        if kind is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = checked(kind, positive=meta["positive"], minimum=meta["minimum"], maximum=meta["maximum"])
            if meta["choices"]:
                kwargs["choices"] = meta["choices"]
            if f.default is dataclasses.MISSING:
                kwargs["required"] = True
        kwargs["default"] = None if f.default is dataclasses.MISSING else f.default
        flag(parser, "--" + f.name.replace("_", "-"), *meta["aliases"], **kwargs)


def flag(parser: argparse.ArgumentParser, name: str, *aliases: str, **kwargs) -> None:
    """Add --kebab-case with its --snake_case twin (the original prototype's spelling)."""
    names = [name, *aliases]
    snake = name.replace("-", "_")
    if snake.startswith("__") and snake[2:] != name[2:] and f"--{snake[2:]}" not in names:
        names.append(f"--{snake[2:]}")
    parser.add_argument(*names, **kwargs)


def from_flags(config_class: type, args: argparse.Namespace) -> Any:
    """The config from parsed flags (fields without a flag keep their defaults)."""
    names = {f.name for f in dataclasses.fields(config_class) if f.metadata.get("flag", False)}
    return config_class(**{k: v for k, v in vars(args).items() if k in names})


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs (bench scripts' `--set`/`--model`); values are Python literals (numbers, tuples),
    true / false, or plain strings."""
    out = {}
    for item in items:
        key, _, text = item.partition("=")
        name = key.replace("-", "_")
        if text.lower() in ("true", "false"):  # never the string "false", which is true
            out[name] = text.lower() == "true"
            continue
        try:
            out[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[name] = text
    return out


def _base_type(annotation: Any) -> type:
    """int from `int | None`, and so on."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def checked(kind: type, *, positive: bool = False, minimum: float | None = None, maximum: float | None = None):
    """An argparse `type` that parses `kind` and refuses values out of range (and non-finite floats)."""

    def parse(text: str):
        value = kind(text)
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {value}")
        if positive and not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum:g}, got {value}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse

