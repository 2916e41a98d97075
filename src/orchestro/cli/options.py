"""Command-line flags derived from the settings models, so each option is declared once."""

from __future__ import annotations

import argparse
import typing
from typing import Any, Literal

from pydantic_settings import BaseSettings

__all__ = ["add_settings_flags", "settings_flags"]


def add_settings_flags(
    parser: argparse.ArgumentParser,
    model: type[BaseSettings],
    only: tuple[str, ...] | None = None,
) -> None:
    """Add ``--field-name`` for every field of ``model`` (or those in ``only``); values are
    validated by the model."""
    for name, field in model.model_fields.items():
        if only is not None and name not in only:
            continue
        flag = "--" + name.replace("_", "-")
        env = f"ORCHESTRO_{name.upper()}"
        default = field.default
        # argparse expands %-formats in help: a description's "70%" must stay literal.
        help_text = f"{field.description or ''} [env {env}; default: {default}]".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        annotation = field.annotation
        if typing.get_origin(annotation) is Literal:
            kwargs["choices"] = list(typing.get_args(annotation))
        parser.add_argument(flag, metavar=name.upper(), **kwargs)


def settings_flags(args: argparse.Namespace, model: type[BaseSettings]) -> dict[str, Any]:
    """The values of ``model``'s flags that were given on the command line."""
    return {
        name: getattr(args, name)
        for name in model.model_fields
        if getattr(args, name, None) is not None
    }
