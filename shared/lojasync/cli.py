"""The `lojasync` command line."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import aio_pika
import httpx
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from lojasync.cli_ops import register as register_operation_commands
from lojasync.cli_options import Language
from lojasync.convergence import ConvergenceReport, compare_stores
from lojasync.dead_letters import list_dead_letters, republish_dead_letters
from lojasync.embedded_broker import is_embedded_url
from lojasync.errors import LojasyncError
from lojasync.i18n import PORTUGUESE, detect_language, format_number, message
from lojasync.settings import default_broker_url, redact_url

T = TypeVar("T")

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

    # Without vertical rules the table fits 80 columns in both languages.
    table = Table(
        title=message("status.title", language),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in ("store", "entity", "expected", "held", "pending", "digest", "match"):
        header = message(f"status.{column}", language)
        table.add_column(
            header,
            min_width=len(header),
            justify="right" if column in ("expected", "held", "pending") else "left",
            # On a narrow terminal the headers wrap; names and digests stay whole.
            no_wrap=column in ("store", "entity", "digest"),
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
                format_number(entity.expected_count, language),
                "-" if entity.count is None else format_number(entity.count, language),
                format_number(entity.pending, language),
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


dead_letters_app = typer.Typer(
    help="List dead letters and send chosen ones back to their queue.", no_args_is_help=True
)
app.add_typer(dead_letters_app, name="dead-letters")

BrokerUrl = Annotated[
    str | None,
    typer.Option(
        "--broker-url",
        envvar="LOJASYNC_BROKER_URL",
        help="RabbitMQ URL (amqp://...), or sqlite:///FILE for the embedded broker; "
        "default: the embedded broker in LOJASYNC_DATA_DIR (var/lojasync).",
        show_default=False,
    ),
]
Namespace = Annotated[
    str,
    typer.Option("--namespace", envvar="LOJASYNC_NAMESPACE", help="Prefix of the queue names."),
]


@dead_letters_app.command("list")
def list_dead_letters_command(
    broker_url: BrokerUrl = None,
    namespace: Namespace = "lojasync",
    limit: Annotated[int, typer.Option(help="Maximum number of messages to show.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
    lang: Language = None,
) -> None:
    """Show the messages in the dead-letter queue with the reason; they stay in the queue."""
    language = detect_language(lang)
    broker_url = broker_url or default_broker_url()
    letters = _run_broker_command(
        list_dead_letters(broker_url, namespace, limit=limit), broker_url, language
    )
    if as_json:
        print(json.dumps([letter.as_dict() for letter in letters], indent=2))
        return
    if not letters:
        queue = f"{namespace}.dead-letters"
        url = redact_url(broker_url)
        console.print(message("dead_letters.none", language, queue=queue, url=url))
        return
    table = Table(title=message("dead_letters.title", language, count=len(letters)))
    for column in ("message_id", "queue", "routing_key", "reason"):
        table.add_column(message(f"dead_letters.{column}", language), overflow="fold")
    for letter in letters:
        table.add_row(letter.message_id, letter.queue, letter.routing_key, letter.reason)
    console.print(table)


@dead_letters_app.command("republish")
def republish_dead_letters_command(
    message_ids: Annotated[
        list[str] | None, typer.Argument(help="Message ids to send back (see `list`).")
    ] = None,
    all_messages: Annotated[
        bool, typer.Option("--all", help="Send every dead letter back to its queue.")
    ] = False,
    broker_url: BrokerUrl = None,
    namespace: Namespace = "lojasync",
    lang: Language = None,
) -> None:
    """Send chosen dead letters back to the queue they came from, after a fix."""
    language = detect_language(lang)
    if not message_ids and not all_messages:
        console.print(message("dead_letters.choose", language), style="red")
        raise typer.Exit(2)
    chosen = None if all_messages else set(message_ids or [])
    broker_url = broker_url or default_broker_url()
    result = _run_broker_command(
        republish_dead_letters(broker_url, namespace, chosen), broker_url, language
    )
    console.print(message("dead_letters.republished", language, count=len(result.republished)))
    for missing in result.not_found:
        console.print(message("dead_letters.not_found", language, message_id=missing), style="red")
    raise typer.Exit(1 if result.not_found else 0)


def _run_broker_command(coroutine: Coroutine[Any, Any, T], broker_url: str, language: str) -> T:
    embedded = is_embedded_url(broker_url)
    try:
        return asyncio.run(coroutine)
    except (OSError, sqlite3.Error, LojasyncError, aio_pika.exceptions.AMQPError) as exc:
        key = "error.embedded_broker" if embedded else "error.broker"
        console.print(message(key, language, url=redact_url(broker_url), error=exc), style="red")
        raise typer.Exit(2) from exc


register_operation_commands(app)


def main() -> None:
    app()
