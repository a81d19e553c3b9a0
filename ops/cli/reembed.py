"""`embedq reembed ...`: drive a re-embedding migration of a live table."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg import sql
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from embedq_core.db import libpq_url
from embedq_core.settings import Settings
from ops.cli.config import configure


def _settings() -> Settings:
    return configure(quiet=True)


@contextmanager
def table_connection(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(
        libpq_url(settings.require_database_url()),
        autocommit=True,
        application_name="embedq reembed",  # so pg_stat_activity says who waits on a lock
    ) as conn:
        yield conn


def fail(exc: Exception) -> click.ClickException:
    """A command's error, as click prints it."""
    return click.ClickException(str(exc))


def lock_policy(settings: Settings) -> Any:
    """Short lock waits on the user's table, each retry printed."""
    from migrations.reembed.locking import LockPolicy

    return LockPolicy.from_settings(settings, on_retry=lambda line: click.echo(line, err=True))


NAMES_HELP = (
    "Names are written as in SQL: unquoted ones fold to lower case; double-quote names with"
    """ capitals, spaces or other characters, e.g. --table '"Shop Data"."Song Lyrics"'"""
    """ --text '"lyricsText"'."""
)


@click.group()
def reembed() -> None:
    """Re-embed a live table's legacy vectors into a new model's column, resumably."""


def _target_options(fn: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--table",
                required=True,
                help="table or schema.table, as in SQL (unqualified: found via search_path)",
            ),
            click.option("--id", "id_column", required=True, help="single-column primary key"),
            click.option("--text", "text_column", required=True, help="text column to embed"),
            click.option("--vector", "vector_column", required=True, help="legacy vector column"),
            click.option(
                "--model",
                "model_dir",
                required=True,
                type=click.Path(path_type=Path, exists=True),
                help="exported model dir",
            ),
            click.option("--name", default=None, help="migration name (default: TABLE_reembed)"),
            click.option(
                "--new-column",
                default=None,
                help="column for the new vectors (default: VECTOR_<dimension>)",
            ),
            click.option("--chunk-size", type=int, default=None, help="rows per step"),
        ]
    ):
        fn = option(fn)
    return fn


def _draft(conn: psycopg.Connection[Any], settings: Settings, **opts: Any) -> Any:
    from embedq_core.manifest import ModelManifest
    from migrations.reembed.planning import draft_migration
    from migrations.reembed.target import default_migration_name, resolve_target

    target = resolve_target(
        conn, opts["table"], opts["id_column"], opts["text_column"], opts["vector_column"]
    )
    manifest = ModelManifest.read(opts["model_dir"])
    name = opts["name"] or default_migration_name(target.table)
    new_column = opts["new_column"] or f"{target.legacy_column}_{manifest.dimension}"
    chunk = opts["chunk_size"] or settings.reembed_chunk_size
    return target, manifest, draft_migration(target, name, new_column, manifest, chunk)


@reembed.command("plan", epilog=NAMES_HELP)
@_target_options
def plan_cmd(**opts: Any) -> None:
    """Count rows, time the engine on a sample of them, show the DDL `start` will run."""
    from migrations.reembed.planning import plan
    from migrations.reembed.target import TargetError
    from workers.engine import Embedder, EngineConfig

    settings = _settings()
    console = Console()
    with table_connection(settings) as conn:
        try:
            target, manifest, draft = _draft(conn, settings, **opts)
        except (TargetError, FileNotFoundError) as exc:
            raise fail(exc) from exc
        embedder = Embedder.from_model_dir(opts["model_dir"], EngineConfig.from_settings(settings))
        result = plan(
            conn,
            target,
            draft.name,
            draft.new_column,
            manifest,
            draft.chunk_size,
            lambda texts: embedder.embed(texts).vectors,
        )
        legacy = sql.Identifier(target.schema, target.table, target.legacy_column).as_string(conn)
        new = sql.Identifier(draft.new_column).as_string(conn)
    console.print(
        f"migration [bold]{draft.name}[/]: {escape(legacy)} ({target.legacy_dimension}-d)"
        f" → {escape(new)} ({manifest.dimension}-d, {manifest.manifest_id})"
    )
    console.print(
        f"rows: {result.rows:,}; engine on {result.sample_rows} sampled rows "
        f"({embedder.backend}): {result.sample_rows_per_s:,.0f} rows/s per worker"
    )
    console.print(
        f"estimated backfill: {result.estimated_s / 60:,.1f} min with one worker "
        "(divide by the number of workers serving this model)"
    )
    click.echo("DDL that start runs (unwrapped, so it can be copied):")
    for statement in result.statements:
        click.echo(f"  {statement};")


@reembed.command("start", epilog=NAMES_HELP)
@_target_options
def start_cmd(**opts: Any) -> None:
    """Add the new column and trigger, then backfill in chunks on the model's workers."""
    from embedq_core.catalog import register_model_dir
    from embedq_core.db import make_engine
    from embedq_core.queueing import make_celery
    from migrations.reembed.control import MigrationStateError, start
    from migrations.reembed.locking import LockTimeout
    from migrations.reembed.target import TargetError

    settings = _settings()
    engine = make_engine(settings.require_database_url(), pool_size=1)
    with engine.begin() as sa_conn:
        register_model_dir(sa_conn, opts["model_dir"])
    engine.dispose()
    with table_connection(settings) as conn:
        try:
            _, _, draft = _draft(conn, settings, **opts)
            m = start(conn, draft, make_celery(settings), lock_policy(settings))
        except (TargetError, MigrationStateError, LockTimeout) as exc:
            raise fail(exc) from exc
    click.echo(f"started {m.name}: {m.rows_total:,} rows")
    click.echo(f"follow it with: embedq reembed status {m.name} --watch")


def run_control(action: str, name: str, **kwargs: Any) -> None:
    from migrations.reembed import control
    from migrations.reembed.locking import LockTimeout
    from migrations.reembed.state import MigrationNotFound

    settings = _settings()
    with table_connection(settings) as conn:
        try:
            if action == "resume":
                from embedq_core.queueing import make_celery
                from migrations.reembed import row_failures

                if kwargs.get("retry_parked"):
                    released = row_failures.retry_parked(conn, name)
                    click.echo(f"{released} parked row(s) released")
                control.resume(conn, name, make_celery(settings))
            elif action == "pause":
                control.pause(conn, name)
            elif action == "finalize":
                from embedq_core.queueing import make_celery

                control.finalize(conn, name, lock_policy(settings), make_celery(settings))
            else:  # DDL on the user's table: short lock waits, retried
                getattr(control, action)(conn, name, lock_policy(settings), **kwargs)
        except (control.MigrationStateError, MigrationNotFound, LockTimeout) as exc:
            raise fail(exc) from exc
    click.echo(f"{name}: {action} done")


@reembed.command("pause")
@click.argument("name")
def pause_cmd(name: str) -> None:
    """Stop after the current chunk."""
    run_control("pause", name)


@reembed.command("resume")
@click.argument("name")
@click.option("--retry-parked", is_flag=True, help="Also give parked rows a fresh budget.")
def resume_cmd(name: str, retry_parked: bool) -> None:
    """Continue from the checkpoint (also after a failure)."""
    run_control("resume", name, retry_parked=retry_parked)


@reembed.command("cutover")
@click.argument("name")
@click.option("--force", is_flag=True, help="Cut over before the backfill and index are done.")
def cutover_cmd(name: str, force: bool) -> None:
    """Atomically give the legacy column name to the new vectors."""
    run_control("cutover", name, force=force)


@reembed.command("rollback")
@click.argument("name")
def rollback_cmd(name: str) -> None:
    """Atomically switch readers back to the legacy vectors."""
    run_control("rollback", name)


@reembed.command("finalize")
@click.argument("name")
@click.confirmation_option(prompt="This drops the legacy vector column. Continue?")
def finalize_cmd(name: str) -> None:
    """Drop the legacy column and the migration's trigger (after cutover only)."""
    run_control("finalize", name)


@reembed.command("status")
@click.argument("name")
@click.option("--watch", is_flag=True, help="Show a live progress bar until the backfill is done.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option(
    "--exact",
    is_flag=True,
    help="Count the table now (scans it) instead of the counts the migration keeps.",
)
def status_cmd(name: str, watch: bool, as_json: bool, exact: bool) -> None:
    """Rows done and pending, rate, ETA, phase and index progress."""
    from migrations.reembed.progress import progress
    from migrations.reembed.state import MigrationNotFound

    settings = _settings()
    console = Console()
    with table_connection(settings) as conn:
        try:
            figures = progress(conn, name, exact=exact)
        except MigrationNotFound as exc:
            raise fail(exc) from exc
        if as_json:
            click.echo(json.dumps(figures.as_dict(), default=str))
            return
        if not watch:
            print_status(console, figures)
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:,.0f} rows/s"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as bar:
            task = bar.add_task(name, total=figures.rows_total, rate=0.0)
            while True:
                figures = progress(conn, name)
                bar.update(
                    task,
                    # Rows without text never get a vector: the bar counts only the others.
                    total=figures.rows_total - (figures.rows_no_text or 0),
                    completed=figures.rows_done,
                    rate=figures.rate_rows_per_s,
                    description=f"{name} [{figures.phase}]",
                )
                if figures.phase == "following" or figures.status != "running":
                    break
                time.sleep(1.0)
        print_status(console, figures)


def print_status(console: Console, figures: Any) -> None:
    """Every figure of progress(), one per line."""
    what = "vectorizer" if figures.kind == "vectorizer" else "re-embedding"
    table = Table(show_header=False, title=f"{what} {figures.name}")
    for key, value in figures.as_dict().items():
        if isinstance(value, float):
            value = f"{value:,.2f}"
        table.add_row(key, "—" if value is None else escape(str(value)))
    console.print(table)


@reembed.command("verify")
@click.argument("name")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--sample", type=int, default=64, show_default=True)
@click.option("--min-cos", type=float, default=0.9999, show_default=True)
def verify_cmd(name: str, model_dir: Path, sample: int, min_cos: float) -> None:
    """Check every row, and re-embed a random sample against what is stored."""
    from migrations.reembed.verify import NotVerifiable, verify
    from workers.engine import Embedder, EngineConfig

    settings = _settings()
    embedder = Embedder.from_model_dir(model_dir, EngineConfig.from_settings(settings))
    with table_connection(settings) as conn:
        try:
            report = verify(
                conn, name, lambda texts: embedder.embed(texts).vectors, sample, min_cos
            )
        except NotVerifiable as exc:
            raise fail(exc) from exc
    click.echo(json.dumps(report.as_dict(), indent=2))
    if not report.ok:
        raise click.ClickException("verification failed")
