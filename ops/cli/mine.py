"""`embedq mine`: hard negatives for fine-tuning, mined from a collection by the fleet."""

from __future__ import annotations

from pathlib import Path

import click

from ops.cli.config import configure


def _range(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    from ops.mining.sampling import parse_range

    try:
        return parse_range(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("mine")
@click.option("--collection", required=True, help="The corpus: a collection the fleet filled.")
@click.option(
    "--data",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    required=True,
    help='Queries, one {"query", "pos": [texts]} or {"query", "pos_ids": [row ids]} per line; '
    "other keys pass through.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Training lines in FlagEmbedding's format (query, pos, neg, prompt[, pos_scores, "
    "neg_scores]).",
)
@click.option(
    "--range",
    "rank_range",
    default="2-200",
    show_default=True,
    callback=_range,
    help="Ranks to sample negatives from: 1-based, inclusive, counted after removing the "
    "positives and copies of the query.",
)
@click.option("--negatives", type=click.IntRange(min=1), default=15, show_default=True)
@click.option(
    "--pos-share",
    type=click.FloatRange(min=0, max=1),
    default=0.95,
    show_default=True,
    help="Drop candidates scoring above this share of the (weakest) positive's cosine: likely "
    "false negatives. 1 turns it off.",
)
@click.option(
    "--pos-margin",
    type=click.FloatRange(min=0),
    default=None,
    help="Also drop candidates within this cosine margin of the positive's score.",
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--exact",
    is_flag=True,
    help="Exact nearest neighbours (a scan per query) instead of the HNSW index.",
)
@click.option(
    "--ef-search",
    type=click.IntRange(min=1, max=1000),
    default=None,
    help="HNSW candidate list (hnsw.ef_search); default: the candidates needed, range end + 5.",
)
@click.option(
    "--vectors-collection",
    default=None,
    help="Collection for the query-side vectors (default: COLLECTION_mine); kept, so a rerun "
    "embeds nothing again.",
)
@click.option(
    "--reranker",
    default=None,
    help="A reranker the fleet serves: its export directory, manifest id or source name (as "
    "/v1/rerank's model); adds pos_scores and neg_scores.",
)
@click.option("--api-url", envvar="EMBEDQ_API_URL", default=None, help="For --reranker.")
@click.option("--api-key", envvar="EMBEDQ_KEY", default=None, help="For --reranker.")
@click.option("--overwrite", is_flag=True, help="Replace OUT instead of refusing or resuming.")
def mine_cmd(
    collection: str,
    data: Path,
    out: Path,
    rank_range: tuple[int, int],
    negatives: int,
    pos_share: float,
    pos_margin: float | None,
    seed: int,
    exact: bool,
    ef_search: int | None,
    vectors_collection: str | None,
    reranker: str | None,
    api_url: str | None,
    api_key: str | None,
    overwrite: bool,
) -> None:
    """Mine hard negatives for each query from a collection (FlagEmbedding's hn_mine.py over
    pgvector): the fleet embeds the queries, Postgres finds the candidates, a seeded sample from
    the rank range, minus likely false negatives, becomes each line's `neg`. An interrupted run
    resumes where it stopped when run again."""
    settings = configure(quiet=True)
    from rich.console import Console

    from embedq_core.catalog import CollectionConflict
    from ops.mining.lines import QueriesFileError
    from ops.mining.report import print_summary
    from ops.mining.resume import ResumeRefused
    from ops.mining.run import MineRequest, MiningError, mine
    from ops.mining.sampling import MiningParams
    from ops.mining.teacher import TeacherError
    from ops.mining.vectors import EmbeddingFailed

    if reranker is not None and Path(reranker).is_dir():
        from embedq_core.manifest import ModelManifest

        reranker = ModelManifest.read(Path(reranker)).manifest_id
    params = MiningParams(
        rank_first=rank_range[0],
        rank_last=rank_range[1],
        negatives=negatives,
        pos_share=pos_share if pos_share < 1 else None,
        pos_margin=pos_margin,
        seed=seed,
    )
    request = MineRequest(
        collection=collection,
        data=data,
        out=out,
        params=params,
        exact=exact,
        ef_search=ef_search,
        vectors_collection=vectors_collection,
        reranker=reranker,
        api_url=api_url,
        api_key=api_key,
        overwrite=overwrite,
    )
    console = Console(stderr=True)
    try:
        summary = mine(settings, request, console)
    except (
        CollectionConflict,
        QueriesFileError,
        MiningError,
        ResumeRefused,
        EmbeddingFailed,
        TeacherError,
        ValueError,
    ) as exc:
        raise click.ClickException(str(exc)) from exc
    print_summary(Console(), request, summary)
