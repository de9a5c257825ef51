"""The `lojasync` command line."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from lojasync.convergence import ConvergenceReport, compare_stores
from lojasync.i18n import PORTUGUESE, detect_language, message

app = typer.Typer(
    help="lojasync: master-data sync between a retail ERP and its stores.", no_args_is_help=True
)
console = Console()

OrchestratorUrl = Annotated[
    str,
    typer.Option(
        "--orchestrator-url",
        envvar="LOJASYNC_ORCHESTRATOR_URL",
        help="Base URL of the sync-orchestrator API.",
    ),
]
Language = Annotated[
    str | None,
    typer.Option("--lang", help="Output language: en or pt-BR (default: from LANG)."),
]


@app.command()
def status(
    orchestrator_url: OrchestratorUrl = "http://127.0.0.1:8000",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    lang: Language = None,
) -> None:
    """Print per-store, per-entity record counts and digests, and whether each store matches.

    Exits with status 0 when every store matches the orchestrator, 1 when one differs or
    cannot be reached, 2 when the orchestrator cannot be read.
    """
    language = detect_language(lang)
    try:
        report = asyncio.run(compare_stores(orchestrator_url))
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        console.print(
            message("error.orchestrator", language, url=orchestrator_url, error=exc), style="red"
        )
        raise typer.Exit(2) from exc

    if as_json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        print_report(report, language)
    raise typer.Exit(0 if report.converged else 1)


def print_report(
    report: ConvergenceReport, language: str, *, output: Console | None = None
) -> None:
    output = output or console
    if not report.stores:
        output.print(message("status.no_stores", language))
        return

    table = Table(title=message("status.title", language))
    for column in ("store", "entity", "expected", "held", "pending", "digest", "match"):
        table.add_column(
            message(f"status.{column}", language),
            justify="right" if column in ("expected", "held", "pending") else "left",
        )
    for store in report.stores:
        if not store.reachable:
            output.print(
                message(
                    "status.unreachable",
                    language,
                    store_id=store.store_id,
                    url=store.api_url,
                    error=store.error,
                ),
                style="red",
            )
        for entity in store.entities:
            if entity.expected_count == 0 and not entity.count and not entity.pending:
                continue
            table.add_row(
                store.store_id,
                entity.entity,
                str(entity.expected_count),
                "-" if entity.count is None else str(entity.count),
                str(entity.pending),
                (entity.digest or "-")[:12],
                message("status.yes", language)
                if entity.matches
                else message("status.no", language),
                style=None if entity.matches else "red",
            )
    output.print(table)
    differing = sum(1 for store in report.stores if not store.matches)
    if differing:
        output.print(
            message("status.diverged", language, stores=differing, total=len(report.stores)),
            style="red",
        )
    else:
        output.print(
            message("status.converged", language, stores=len(report.stores)), style="green"
        )


@app.command()
def demo(
    products: Annotated[int, typer.Option(help="Number of products in the demo catalog.")] = 10_000,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Leave the services running after the demo.")
    ] = False,
    lang: Language = None,
) -> None:
    """Start every service, load real reference data and a catalog, and run the scenarios."""
    from lojasync_demo.run import DemoFailed, run_demo

    language = detect_language(lang)
    try:
        status = asyncio.run(
            run_demo(products=products, keep_running=keep_running, language=language)
        )
    except DemoFailed as failure:
        console.print(
            failure.message_pt_br if language == PORTUGUESE else failure.message, style="red"
        )
        raise typer.Exit(2) from failure
    except (KeyboardInterrupt, asyncio.CancelledError):
        status = 130
    raise typer.Exit(status)


def main() -> None:
    app()
