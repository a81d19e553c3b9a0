"""`embedq collections ...` and `embedq keys ...`: an operator's catalogue tasks."""

from __future__ import annotations

from pathlib import Path

import click

from ops.cli.chunking_options import chunking_from_options, chunking_options
from ops.cli.config import configure


@click.group()
def collections() -> None:
    """Collections of vectors."""


@collections.command("create")
@click.argument("name")
@click.option("--model-dir", type=click.Path(path_type=Path, exists=True), required=True)
@chunking_options("each item")
def collections_create(
    name: str, model_dir: Path, chunk_max_tokens: int | None, chunk_overlap_tokens: int
) -> None:
    """Create collection NAME bound to the model exported in MODEL_DIR."""
    settings = configure()
    from embedq_core.catalog import (
        InvalidChunking,
        create_collection,
        register_model_dir,
    )
    from embedq_core.db import make_engine

    chunking = chunking_from_options(chunk_max_tokens, chunk_overlap_tokens)
    engine = make_engine(settings.require_database_url())
    with engine.begin() as conn:
        manifest = register_model_dir(conn, model_dir)
    try:
        collection = create_collection(engine, name, manifest.manifest_id, chunking)
    except InvalidChunking as exc:
        raise click.UsageError(str(exc)) from exc
    chunks = ""
    if collection.chunking is not None:
        chunks = (
            f", chunks of {collection.chunking.max_tokens} tokens overlapping by "
            f"{collection.chunking.overlap_tokens}"
        )
    click.echo(
        f"collection {collection.name}: {collection.manifest_id}, "
        f"{collection.dimension}-d, table {collection.vector_table}{chunks}"
    )


@click.group()
def keys() -> None:
    """API keys (stored hashed; a key is shown once, at creation)."""


@keys.command("create")
@click.argument("name")
@click.option(
    "--admin", is_flag=True, help="May also manage vectorizers over HTTP (/v1/vectorizers)."
)
def keys_create(name: str, admin: bool) -> None:
    """Create a key called NAME and print it once."""
    settings = configure()
    from embedq_core.api_keys import create_key
    from embedq_core.db import make_engine

    with make_engine(settings.require_database_url()).begin() as conn:
        key_id, key = create_key(conn, name, admin)
    kind = "admin key" if admin else "key"
    click.echo(f"{kind} {key_id} ({name}); store it now, it is not shown again:")
    click.echo(key)


@keys.command("revoke")
@click.argument("key_id_or_prefix")
def keys_revoke(key_id_or_prefix: str) -> None:
    """Revoke a key by id or by its shown prefix."""
    settings = configure()
    from embedq_core.api_keys import revoke_key
    from embedq_core.db import make_engine

    with make_engine(settings.require_database_url()).begin() as conn:
        revoked = revoke_key(conn, key_id_or_prefix)
    if revoked == 0:
        raise click.ClickException(f"no active key matches {key_id_or_prefix!r}")
    click.echo(f"revoked {revoked} key(s)")


@keys.command("list")
def keys_list() -> None:
    """List keys (id, name, prefix, created, revoked); never the keys themselves."""
    settings = configure()
    from embedq_core.api_keys import list_keys
    from embedq_core.db import make_engine

    with make_engine(settings.require_database_url()).connect() as conn:
        for info in list_keys(conn):
            revoked = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
            click.echo(
                f"{info.key_id}\t{info.name}\t{info.prefix}…\t"
                f"{info.created_at:%Y-%m-%d %H:%M}\t{revoked}"
            )
