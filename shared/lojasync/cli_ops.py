"""`lojasync` commands for store operations: bootstrap, replay, drift, repair, onboard.

Each command asks the orchestrator's API to start the operation, follows its progress
with a progress bar, and prints the result. The orchestrator logs every operation with
the `--requested-by` value (default: user@host).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
from datetime import datetime
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lojasync.i18n import UnknownLanguage, add_messages, detect_language, message

console = Console()
POLL_SECONDS = 0.25

add_messages(
    {
        "ops.progress": ("{kind} of {store_id}", "{kind} da loja {store_id}"),
        "ops.failed": (
            "operation {operation_id} failed: {error}",
            "a operação {operation_id} falhou: {error}",
        ),
        "ops.request_failed": (
            "the orchestrator at {url} refused the request ({status}): {detail}",
            "o orquestrador em {url} recusou a requisição ({status}): {detail}",
        ),
        "ops.unreachable": (
            "cannot reach the orchestrator at {url}: {error}; check that it runs and that "
            "--orchestrator-url is right",
            "não foi possível falar com o orquestrador em {url}: {error}; verifique se ele "
            "está rodando e se --orchestrator-url está correto",
        ),
        "ops.operation": ("operation {operation_id}", "operação {operation_id}"),
        "replay.done": (
            "Replayed {events} event(s) to {store_id} in {messages} message(s).",
            "{events} evento(s) reenviado(s) à loja {store_id} em {messages} mensagem(ns).",
        ),
        "replay.dry_run": (
            "Dry run: {events} event(s) would be sent to {store_id}; nothing was sent.",
            "Simulação: {events} evento(s) seriam enviados à loja {store_id}; nada foi enviado.",
        ),
        "bootstrap.done": (
            "Sent {records} record(s) to {store_id} in {messages} message(s).",
            "{records} registro(s) enviado(s) à loja {store_id} em {messages} mensagem(ns).",
        ),
        "drift.in_sync": (
            "{store_id} matches the orchestrator ({seconds} s).",
            "A loja {store_id} confere com o orquestrador ({seconds} s).",
        ),
        "drift.found": (
            "{store_id} differs from the orchestrator in {differences} record(s) ({seconds} s).",
            "A loja {store_id} difere do orquestrador em {differences} registro(s) ({seconds} s).",
        ),
        "drift.title": ("Drift of {store_id}", "Divergências da loja {store_id}"),
        "drift.entity": ("entity", "entidade"),
        "drift.expected": ("expected", "esperado"),
        "drift.held": ("held", "na loja"),
        "drift.missing": ("missing", "faltando"),
        "drift.extra": ("extra", "sobrando"),
        "drift.different": ("different", "diferentes"),
        "drift.keys": ("keys", "chaves"),
        "repair.done": (
            "Re-sent {resent} record(s) to {store_id} and had it raise {raised} as changes.",
            "{resent} registro(s) reenviado(s) à loja {store_id}; {raised} enviado(s) pela "
            "loja como alteração.",
        ),
        "kind.bootstrap": ("bootstrap", "carga inicial"),
        "kind.replay": ("replay", "reenvio"),
        "kind.drift": ("drift check", "verificação de divergências"),
        "kind.repair": ("repair", "reparo"),
        "kind.onboarding": ("onboarding", "integração"),
    }
)

ops_app = typer.Typer(no_args_is_help=True)

OrchestratorUrl = Annotated[
    str,
    typer.Option(
        "--orchestrator-url",
        envvar="LOJASYNC_ORCHESTRATOR_URL",
        help="Base URL of the sync-orchestrator API.",
    ),
]
RequestedBy = Annotated[
    str | None,
    typer.Option("--requested-by", help="Who asks for it, for the operation log (user@host)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the operation as JSON.")]


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
        help="Output language: en or pt-BR (default: from LANG).",
        callback=_check_language,
    ),
]
DEFAULT_URL = "http://127.0.0.1:8000"


def _requester(value: str | None) -> str:
    return value or f"{getpass.getuser()}@{socket.gethostname()}"


class OperationFailed(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


async def _follow(
    url: str, store_id: str, kind: str, body: dict[str, Any], language: str, quiet: bool
) -> dict[str, Any]:
    """Start an operation and poll it until it ends, showing a progress bar."""
    base = url.rstrip("/")
    async with httpx.AsyncClient(timeout=60) as client:
        try:
            response = await client.post(f"{base}/v1/stores/{store_id}/{kind}", json=body)
        except httpx.HTTPError as exc:
            raise OperationFailed(message("ops.unreachable", language, url=url, error=exc)) from exc
        if response.status_code >= 400:
            detail = response.json().get("detail", response.text)
            if isinstance(detail, dict):
                detail = detail.get("message_pt_br" if language == "pt-BR" else "message", detail)
            raise OperationFailed(
                message(
                    "ops.request_failed",
                    language,
                    url=url,
                    status=response.status_code,
                    detail=detail,
                )
            )
        view: dict[str, Any] = response.json()
        label = message(
            "ops.progress", language, kind=message(f"kind.{kind}", language), store_id=store_id
        )
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
            transient=False,
        ) as progress:
            task = progress.add_task(label, total=None)
            while view["status"] == "running":
                total = view["total"] or None
                progress.update(task, completed=view["done"], total=total)
                await asyncio.sleep(POLL_SECONDS)
                polled = await client.get(f"{base}/v1/operations/{view['id']}")
                polled.raise_for_status()
                view = polled.json()
            progress.update(task, completed=view["done"], total=view["total"] or view["done"])
    return view


def _run(
    url: str,
    store_id: str,
    kind: str,
    body: dict[str, Any],
    language: str,
    as_json: bool,
) -> dict[str, Any]:
    try:
        view = asyncio.run(_follow(url, store_id, kind, body, language, quiet=as_json))
    except OperationFailed as failure:
        console.print(failure.text, style="red")
        raise typer.Exit(2) from failure
    except httpx.HTTPError as exc:
        console.print(message("ops.unreachable", language, url=url, error=exc), style="red")
        raise typer.Exit(2) from exc
    if as_json:
        print(json.dumps(view, indent=2, sort_keys=True))
    if view["status"] != "done":
        console.print(
            message("ops.failed", language, operation_id=view["id"], error=view["error"]),
            style="red",
        )
        raise typer.Exit(1)
    if not as_json:
        console.print(message("ops.operation", language, operation_id=view["id"]), style="dim")
    return view


@ops_app.command()
def replay(
    store_id: Annotated[str, typer.Argument(help="Store to send the events to.")],
    entity: Annotated[
        list[str] | None, typer.Option("--entity", help="Only this entity (repeatable).")
    ] = None,
    key: Annotated[
        list[str] | None, typer.Option("--key", help="Only this record key (repeatable).")
    ] = None,
    from_revision: Annotated[
        int | None, typer.Option(help="Only revisions from this one on.", min=1)
    ] = None,
    to_revision: Annotated[
        int | None, typer.Option(help="Only revisions up to this one.", min=1)
    ] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only events recorded at or after this time (ISO).")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(help="Only events recorded at or before this time (ISO).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count and list the events; send nothing.")
    ] = False,
    orchestrator_url: OrchestratorUrl = DEFAULT_URL,
    requested_by: RequestedBy = None,
    as_json: AsJson = False,
    lang: Language = None,
) -> None:
    """Re-send resolved events from the event log to a store; safe to repeat."""
    language = detect_language(lang)
    body = {
        "requested_by": _requester(requested_by),
        "entities": entity or None,
        "record_keys": key or None,
        "from_revision": from_revision,
        "to_revision": to_revision,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "dry_run": dry_run,
    }
    view = _run(orchestrator_url, store_id, "replay", body, language, as_json)
    if as_json:
        return
    result = view["result"]
    if dry_run:
        console.print(
            message("replay.dry_run", language, events=result["events"], store_id=store_id)
        )
        table = Table()
        for column in ("seq", "entity", "record_key", "revision", "deleted", "recorded_at"):
            table.add_column(column)
        for item in result["sample"]:
            table.add_row(*(str(item[column]) for column in item))
        console.print(table)
        return
    console.print(
        message(
            "replay.done",
            language,
            events=result["events"],
            store_id=store_id,
            messages=result["messages"],
        ),
        style="green",
    )


@ops_app.command()
def bootstrap(
    store_id: Annotated[str, typer.Argument(help="The new, empty store to fill.")],
    orchestrator_url: OrchestratorUrl = DEFAULT_URL,
    requested_by: RequestedBy = None,
    as_json: AsJson = False,
    lang: Language = None,
) -> None:
    """Send a new store every record in its scope; run it again to resume after a stop."""
    language = detect_language(lang)
    body = {"requested_by": _requester(requested_by)}
    view = _run(orchestrator_url, store_id, "bootstrap", body, language, as_json)
    if not as_json:
        result = view["result"]
        console.print(
            message(
                "bootstrap.done",
                language,
                records=result["records"],
                store_id=store_id,
                messages=result["messages"],
            ),
            style="green",
        )


@ops_app.command()
def drift(
    store_id: Annotated[str, typer.Argument(help="The store to compare.")],
    orchestrator_url: OrchestratorUrl = DEFAULT_URL,
    requested_by: RequestedBy = None,
    as_json: AsJson = False,
    lang: Language = None,
) -> None:
    """Compare a store with the orchestrator; exit status 1 when they differ."""
    language = detect_language(lang)
    body = {"requested_by": _requester(requested_by)}
    view = _run(orchestrator_url, store_id, "drift", body, language, as_json)
    report = view["result"]
    if not as_json:
        print_drift(report, language)
    raise typer.Exit(0 if report["in_sync"] else 1)


def print_drift(report: dict[str, Any], language: str) -> None:
    store_id = report["store_id"]
    if report["in_sync"]:
        console.print(
            message("drift.in_sync", language, store_id=store_id, seconds=report["seconds"]),
            style="green",
        )
        return
    table = Table(title=message("drift.title", language, store_id=store_id))
    for column in ("entity", "expected", "held", "missing", "extra", "different", "keys"):
        table.add_column(message(f"drift.{column}", language), overflow="fold")
    for entity, drift_of in report["entities"].items():
        keys = [*drift_of["missing_keys"], *drift_of["extra_keys"], *drift_of["different_keys"]]
        shown = ", ".join(keys[:10]) + (" ..." if len(keys) > 10 else "")
        table.add_row(
            entity,
            str(drift_of["expected"]),
            str(drift_of["held"]),
            str(drift_of["missing"]),
            str(drift_of["extra"]),
            str(drift_of["different"]),
            shown,
        )
    console.print(table)
    console.print(
        message(
            "drift.found",
            language,
            store_id=store_id,
            differences=report["differences"],
            seconds=report["seconds"],
        ),
        style="red",
    )


@ops_app.command()
def repair(
    store_id: Annotated[str, typer.Argument(help="The store to repair.")],
    orchestrator_url: OrchestratorUrl = DEFAULT_URL,
    requested_by: RequestedBy = None,
    as_json: AsJson = False,
    lang: Language = None,
) -> None:
    """Detect drift and fix exactly the differing records, as the ownership policy says."""
    language = detect_language(lang)
    body = {"requested_by": _requester(requested_by)}
    view = _run(orchestrator_url, store_id, "repair", body, language, as_json)
    if not as_json:
        result = view["result"]
        console.print(
            message(
                "repair.done",
                language,
                resent=result["resent"],
                raised=result["raised"],
                store_id=store_id,
            ),
            style="green",
        )


def register(app: typer.Typer) -> None:
    """Add the operation commands to the `lojasync` app."""
    for command in ops_app.registered_commands:
        app.registered_commands.append(command)
