"""Typer options that every `lojasync` command group shares."""

from __future__ import annotations

from typing import Annotated

import typer

from lojasync.i18n import UnknownLanguage, detect_language


def _check_language(value: str | None) -> str | None:
    try:
        detect_language(value)
    except UnknownLanguage as exc:
        raise typer.BadParameter(str(exc)) from exc
    return value


Language = Annotated[
    str | None,
    typer.Option(
        "--lang",
        help="Output language: en or pt-BR (default: from LOJASYNC_LANG, LC_ALL, LC_MESSAGES "
        "or LANG).",
        callback=_check_language,
    ),
]
