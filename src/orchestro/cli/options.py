"""Command-line flags derived from the settings models, so each option is declared once."""

from __future__ import annotations

import argparse
import typing
from typing import Any, Literal

from pydantic import BaseModel

__all__ = ["add_settings_flags", "settings_flags"]


def add_settings_flags(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    only: tuple[str, ...] | None = None,
    *,
    exclude: frozenset[str] = frozenset(),
    env: bool = True,
) -> None:
    """Add ``--field-name`` for every field of ``model`` (or those in ``only``, less those in
    ``exclude``); a ``Literal`` field's values are its choices; values are validated by the
    model. ``env=False`` for a model no environment variable fills (``DeployOptions``)."""
    for name, field in model.model_fields.items():
        if (only is not None and name not in only) or name in exclude:
            continue
        flag = "--" + name.replace("_", "-")
        default = field.default
        where = f"env ORCHESTRO_{name.upper()}; " if env else ""
        description = field.description or name.replace("_", " ")
        # argparse expands %-formats in help: a description's "70%" must stay literal.
        help_text = f"{description} [{where}default: {default}]".replace("%", "%%")
        kwargs: dict[str, Any] = {
            "dest": name,
            "default": None,
            "help": help_text,
            "metavar": name.upper(),
        }
        annotation = field.annotation
        if typing.get_origin(annotation) is Literal:
            kwargs["choices"] = [str(c) for c in typing.get_args(annotation)]
            del kwargs["metavar"]  # argparse shows the choices: {a,b,c}
        parser.add_argument(flag, **kwargs)


def settings_flags(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The values of ``model``'s flags that were given on the command line."""
    return {
        name: getattr(args, name)
        for name in model.model_fields
        if getattr(args, name, None) is not None
    }
