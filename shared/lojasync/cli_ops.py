"""`lojasync` commands for store operations: bootstrap, replay, drift, repair, onboard.

Each command requests the operation from the orchestrator's API, follows its progress
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

from lojasync.cli_options import Language
from lojasync.i18n import (
    PORTUGUESE,
    add_messages,
    detect_language,
    format_number,
    message,
)

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
        "onboard.title": (
            "Onboarding report of {store_id}",
            "Relatório de integração da loja {store_id}",
        ),
        "onboard.awaiting": (
            "{count} item(s) wait for a decision; list them with `lojasync onboard-items "
            "{operation_id}` and decide with `lojasync onboard-decide {operation_id} ...`.",
            "{count} item(ns) aguardam decisão; liste-os com `lojasync onboard-items "
            "{operation_id}` e decida com `lojasync onboard-decide {operation_id} ...`.",
        ),
        "onboard.dry_run": (
            "Dry run: nothing was sent or changed.",
            "Simulação: nada foi enviado nem alterado.",
        ),
        "onboard.done": (
            "Onboarding of {store_id} is complete.",
            "A integração da loja {store_id} está concluída.",
        ),
        "onboard.items_title": (
            "Items of onboarding {operation_id}",
            "Itens da integração {operation_id}",
        ),
        "onboard.field_invalid": (
            "--field {value!r} is invalid; use NAME=erp or NAME=store",
            "--field {value!r} é inválido; use NOME=erp ou NOME=store",
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
            raise OperationFailed(
                message(
                    "ops.request_failed",
                    language,
                    url=url,
                    status=response.status_code,
                    detail=_detail(response, language),
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
    if view["status"] not in ("done", "awaiting_decisions"):
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
        columns = ("seq", "entity", "record_key", "revision", "deleted", "recorded_at")
        for column in columns:
            table.add_column(_column(column, language))
        # The columns are named, so the table does not rely on the order of the result's keys.
        for item in result["sample"]:
            table.add_row(*(_cell(item[column], language) for column in columns))
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
            message(
                "drift.in_sync",
                language,
                store_id=store_id,
                seconds=format_number(report["seconds"], language, 3),
            ),
            style="green",
        )
        return
    table = Table(title=message("drift.title", language, store_id=store_id))
    for column in ("entity", "expected", "held", "missing", "extra", "different", "keys"):
        table.add_column(message(f"drift.{column}", language), overflow="fold")
    for entity, drift_of in sorted(report["entities"].items()):
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
            seconds=format_number(report["seconds"], language, 3),
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
    """Detect drift and fix exactly the differing records, as the ownership policy decides."""
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


@ops_app.command()
def onboard(
    store_id: Annotated[str, typer.Argument(help="The store whose legacy records to onboard.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report only; send and change nothing.")
    ] = False,
    orchestrator_url: OrchestratorUrl = DEFAULT_URL,
    requested_by: RequestedBy = None,
    as_json: AsJson = False,
    lang: Language = None,
) -> None:
    """Match a store's legacy records to the ERP's and apply what the policy decides.

    Exits with status 0 when onboarding is complete (or the dry run ended), 3 when items
    wait for a person's decision.
    """
    language = detect_language(lang)
    body = {"requested_by": _requester(requested_by), "dry_run": dry_run}
    view = _run(orchestrator_url, store_id, "onboarding", body, language, as_json)
    result = view["result"]
    if not as_json:
        table = Table(title=message("onboard.title", language, store_id=store_id))
        columns = ("only_erp", "only_store", "equal", "different", "conflict", "invalid")
        table.add_column(message("drift.entity", language))
        for column in columns:
            table.add_column(_column(column, language), justify="right")
        for entity, counts in sorted(result["entities"].items()):
            table.add_row(entity, *(str(counts[column]) for column in columns))
        console.print(table)
        if dry_run:
            console.print(message("onboard.dry_run", language))
        elif result["awaiting"]:
            console.print(
                message(
                    "onboard.awaiting",
                    language,
                    count=result["awaiting"],
                    operation_id=view["id"],
                ),
                style="yellow",
            )
        else:
            console.print(message("onboard.done", language, store_id=store_id), style="green")
    raise typer.Exit(3 if result["awaiting"] else 0)


@ops_app.command("onboard-items")
def onboard_items(
    operation_id: Annotated[str, typer.Argument(help="The onboarding operation id.")],
    all_items: Annotated[
        bool, typer.Option("--all", help="List every item, not only those awaiting a decision.")
    ] = False,
    orchestrator_url: OrchestratorUrl = DEFAULT_URL,
    as_json: AsJson = False,
    lang: Language = None,
) -> None:
    """List the items of an onboarding report, by default those awaiting a decision."""
    language = detect_language(lang)
    url = f"{orchestrator_url.rstrip('/')}/v1/operations/{operation_id}/items"
    items = _get_json(url, {"awaiting": "false" if all_items else "true"}, language)["items"]
    if as_json:
        print(json.dumps(items, indent=2, sort_keys=True))
        return
    table = Table(title=message("onboard.items_title", language, operation_id=operation_id))
    for column in ("item", "entity", "category", "store_key", "erp_key", "allowed", "details"):
        table.add_column(_column(column, language), overflow="fold")
    for item in items:
        details = item["differences"] or item["candidates"] or item["errors"] or ""
        table.add_row(
            str(item["item"]),
            item["entity"],
            item["category"],
            item["store_key"],
            item["erp_key"] or "-",
            ", ".join(item["allowed"]),
            json.dumps(details, ensure_ascii=False) if details else "",
        )
    console.print(table)


@ops_app.command("onboard-decide")
def onboard_decide(
    operation_id: Annotated[str, typer.Argument(help="The onboarding operation id.")],
    item: Annotated[int, typer.Argument(help="The item number (see onboard-items).")],
    decision: Annotated[str, typer.Argument(help="accept_erp, accept_store or merge.")],
    erp_key: Annotated[
        str | None, typer.Option("--erp-key", help="For a conflict: the ERP record it is.")
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option("--field", help="For merge: NAME=erp or NAME=store (repeatable)."),
    ] = None,
    orchestrator_url: OrchestratorUrl = DEFAULT_URL,
    requested_by: RequestedBy = None,
    as_json: AsJson = False,
    lang: Language = None,
) -> None:
    """Record a decision on one onboarding item and apply it."""
    language = detect_language(lang)
    fields: dict[str, str] = {}
    for value in field or []:
        name, _, side = value.partition("=")
        if not name or side not in ("erp", "store"):
            console.print(message("onboard.field_invalid", language, value=value), style="red")
            raise typer.Exit(2)
        fields[name] = side
    body = {
        "requested_by": _requester(requested_by),
        "decisions": [
            {
                "item": item,
                "decision": decision,
                "erp_key": erp_key,
                "fields": fields or None,
            }
        ],
    }
    url = f"{orchestrator_url.rstrip('/')}/v1/operations/{operation_id}/decisions"
    view = _post_json(url, body, language)
    if as_json:
        print(json.dumps(view, indent=2, sort_keys=True))
    elif view["result"]["awaiting"]:
        console.print(
            message(
                "onboard.awaiting",
                language,
                count=view["result"]["awaiting"],
                operation_id=operation_id,
            ),
            style="yellow",
        )
    else:
        console.print(message("onboard.done", language, store_id=view["store_id"]), style="green")
    raise typer.Exit(3 if view["result"]["awaiting"] else 0)


def _get_json(url: str, params: dict[str, str], language: str) -> dict[str, Any]:
    return asyncio.run(_request("GET", url, language, params=params))


def _post_json(url: str, body: dict[str, Any], language: str) -> dict[str, Any]:
    return asyncio.run(_request("POST", url, language, json_body=body))


async def _request(
    method: str,
    url: str,
    language: str,
    *,
    params: dict[str, str] | None = None,
    json_body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=120) as client:
        try:
            response = await client.request(method, url, params=params, json=json_body)
        except httpx.HTTPError as exc:
            console.print(message("ops.unreachable", language, url=url, error=exc), style="red")
            raise typer.Exit(2) from exc
    if response.status_code >= 400:
        console.print(
            message(
                "ops.request_failed",
                language,
                url=url,
                status=response.status_code,
                detail=_detail(response, language),
            ),
            style="red",
        )
        raise typer.Exit(2)
    body: dict[str, Any] = response.json()
    return body


# Portuguese headers of the tables whose English headers are the JSON keys.
_COLUMNS_PT_BR = {
    "seq": "seq",
    "entity": "entidade",
    "record_key": "chave",
    "revision": "revisão",
    "deleted": "excluído",
    "recorded_at": "registrado em",
    "only_erp": "só no ERP",
    "only_store": "só na loja",
    "equal": "iguais",
    "different": "diferentes",
    "conflict": "conflitos",
    "invalid": "inválidos",
    "item": "item",
    "category": "categoria",
    "store_key": "chave na loja",
    "erp_key": "chave no ERP",
    "allowed": "decisões possíveis",
    "details": "detalhes",
}


def _column(name: str, language: str) -> str:
    return _COLUMNS_PT_BR.get(name, name) if language == PORTUGUESE else name


def _cell(value: object, language: str) -> str:
    if isinstance(value, bool):
        return message("status.yes" if value else "status.no", language)
    return str(value)


def _detail(response: httpx.Response, language: str) -> object:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return response.text
    if isinstance(detail, dict):
        return detail.get("message_pt_br" if language == "pt-BR" else "message", detail)
    return detail


def register(app: typer.Typer) -> None:
    """Add the operation commands to the `lojasync` app."""
    for command in ops_app.registered_commands:
        app.registered_commands.append(command)
