"""The `--chunk-max-tokens` / `--chunk-overlap-tokens` pair, shared by `collections create` and
`vectorize add`: windows of a model's tokens, as embedq_core.catalog.Chunking describes them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from embedq_core.catalog import Chunking


def chunking_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Both options on a command; `what` is what is cut (e.g. "each item")."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option(
            "--chunk-overlap-tokens",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="With --chunk-max-tokens: tokens a window shares with the one before it.",
        )(command)
        return click.option(
            "--chunk-max-tokens",
            type=click.IntRange(min=1),
            default=None,
            help=f"Cut {what} into windows of this many of the model's tokens (at most its max "
            "length less 2); off by default.",
        )(command)

    return decorate


def chunking_from_options(max_tokens: int | None, overlap_tokens: int) -> Chunking | None:
    """The chunking the two options ask for (None: off); checked against the model later."""
    if max_tokens is not None:
        return Chunking(max_tokens, overlap_tokens)
    if overlap_tokens:
        raise click.UsageError("--chunk-overlap-tokens needs --chunk-max-tokens")
    return None
