"""`lojasync demo`: the whole pipeline on real reference data, end to end.

Starts the orchestrator, the ERP gateway, three store registries and the ERP stand-in,
either in this process on SQLite files and the embedded broker (embedded mode, when
neither LOJASYNC_BROKER_URL nor LOJASYNC_DATABASE_SERVER is set) or as child processes
against the RabbitMQ and PostgreSQL servers, then:
1. pushes the real reference tables and a generated catalog through the gateway;
2. creates a customer in loja-1 and follows it to the ERP and the other stores;
3. tries to edit an ERP-owned product in loja-2 and shows the rejection;
4. changes loja-3's own price table and shows that only loja-3 receives it;
5. prints per-store, per-entity counts and digests and whether each store matches.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import asyncpg
import httpx
from rich.console import Console

from lojasync.batch import batch_queue
from lojasync.cli import print_report
from lojasync.convergence import ConvergenceReport, compare_stores
from lojasync.i18n import PORTUGUESE, format_number
from lojasync.logs import KeyValueFormatter
from lojasync.persistence import drop_database, ensure_database
from lojasync.reference import load_reference_tables
from lojasync.settings import (
    DEFAULT_BROKER_URL,
    DEFAULT_DATABASE_SERVER,
    CommonSettings,
    data_dir,
    database_url_for,
    redact_url,
    servers_configured,
)
from lojasync.topology import (
    ERP_GATEWAY_QUEUE,
    PARTITIONS_EXCHANGE_SUFFIX,
    orchestrator_partition,
    store_queue,
)
from lojasync_demo.catalog import REFERENCE_ENTITIES, build_catalog
from lojasync_demo.embedded import EmbeddedLayout, EmbeddedServices
from lojasync_demo.erp_standin import push_catalog
from lojasync_demo.processes import (
    PortInUse,
    ProcessGroup,
    ServiceProcess,
    ensure_ports_free,
    port_in_use,
)

STORES = ("loja-1", "loja-2", "loja-3")
NAMESPACE = "lojasync-demo"
ORCHESTRATOR_PORT = 8000
GATEWAY_PORT = 8001
ERP_PORT = 8009
FIRST_STORE_PORT = 8101

T = TypeVar("T")
console = Console()


class DemoFailed(Exception):
    """The demo cannot run; the message says why and what to do, in both languages."""

    def __init__(self, message: str, message_pt_br: str) -> None:
        super().__init__(message)
        self.message = message
        self.message_pt_br = message_pt_br


async def _check_servers(broker_url: str, server: str) -> None:
    try:
        connection = await aio_pika.connect(broker_url, timeout=5)
        await connection.close()
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        raise DemoFailed(
            f"cannot reach RabbitMQ at {redact_url(broker_url)}: {exc}; start it "
            "(`rabbitmq-server -detached`) or set LOJASYNC_BROKER_URL",
            f"não foi possível conectar ao RabbitMQ em {redact_url(broker_url)}: {exc}; "
            "inicie-o (`rabbitmq-server -detached`) ou defina LOJASYNC_BROKER_URL",
        ) from exc
    try:
        await ensure_database(_database("orchestrator", server))
    except (OSError, asyncpg.PostgresError) as exc:
        raise DemoFailed(
            f"cannot reach PostgreSQL at {redact_url(server)}: {exc}; start it or set "
            "LOJASYNC_DATABASE_SERVER (for example postgresql+asyncpg://user@host:5432)",
            f"não foi possível conectar ao PostgreSQL em {redact_url(server)}: {exc}; "
            "inicie-o ou defina LOJASYNC_DATABASE_SERVER (por exemplo "
            "postgresql+asyncpg://usuario@host:5432)",
        ) from exc


def _pt(value: float, decimals: int = 0) -> str:
    return format_number(value, PORTUGUESE, decimals)


def _say(language: str, english: str, portuguese: str) -> None:
    console.print(portuguese if language == PORTUGUESE else english, soft_wrap=True)


def _database(name: str, server: str) -> str:
    return database_url_for(f"lojasync_demo_{name.replace('-', '_')}", server)


async def _reset(broker_url: str, server: str) -> None:
    """Drop the demo's databases and queues so every run starts from nothing."""
    for name in ("orchestrator", "gateway", "erp", *STORES):
        await drop_database(_database(name, server))
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        consumers = [
            *(orchestrator_partition(index) for index in range(CommonSettings().partitions)),
            ERP_GATEWAY_QUEUE.consumer,
            "dead-letters",
            *(store_queue(store_id).consumer for store_id in STORES),
            *(batch_queue(store_id).consumer for store_id in STORES),
        ]
        for consumer in consumers:
            await channel.queue_delete(f"{NAMESPACE}.{consumer}")
        # The partitions exchange records the partition count; deleting it lets a run
        # with another LOJASYNC_PARTITIONS declare it again.
        await channel.exchange_delete(f"{NAMESPACE}.{PARTITIONS_EXCHANGE_SUFFIX}")


def _services(broker_url: str, server: str, log_dir: Path) -> list[ServiceProcess]:
    common = {"LOJASYNC_BROKER_URL": broker_url, "LOJASYNC_NAMESPACE": NAMESPACE}
    services = [
        ServiceProcess(
            "sync-orchestrator",
            "sync_orchestrator",
            ORCHESTRATOR_PORT,
            {**common, "LOJASYNC_DATABASE_URL": _database("orchestrator", server)},
            log_dir / "sync-orchestrator.log",
        ),
        ServiceProcess(
            "erp-standin",
            "lojasync_demo.erp_standin",
            ERP_PORT,
            {"LOJASYNC_ERP_DATABASE_URL": _database("erp", server)},
            log_dir / "erp-standin.log",
        ),
        ServiceProcess(
            "erp-gateway",
            "erp_gateway",
            GATEWAY_PORT,
            {
                **common,
                "LOJASYNC_DATABASE_URL": _database("gateway", server),
                "LOJASYNC_ERP_CALLBACK_URL": f"http://127.0.0.1:{ERP_PORT}/erp/changes",
            },
            log_dir / "erp-gateway.log",
        ),
    ]
    for index, store_id in enumerate(STORES):
        port = FIRST_STORE_PORT + index
        services.append(
            ServiceProcess(
                f"store-registry {store_id}",
                "store_registry",
                port,
                {
                    **common,
                    "LOJASYNC_STORE_ID": store_id,
                    "LOJASYNC_DATABASE_URL": _database(store_id, server),
                    "LOJASYNC_API_URL": f"http://127.0.0.1:{port}",
                },
                log_dir / f"store-registry-{store_id}.log",
            )
        )
    return services


async def _until(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float, what: str
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        await asyncio.sleep(0.25)


async def _wait_view(
    client: httpx.AsyncClient,
    url: str,
    done: Callable[[dict[str, Any]], bool] | None,
    what: str,
    timeout: float = 60,
) -> dict[str, Any]:
    """Poll `url` until it answers 200 with a body that satisfies `done`; return the body."""

    async def fetch() -> dict[str, Any] | None:
        response = await client.get(url)
        body: dict[str, Any] | None = response.json() if response.status_code == 200 else None
        return body

    body = await _until(
        fetch, lambda found: found is not None and (done is None or done(found)), timeout, what
    )
    assert body is not None
    return body


def _store_url(store_id: str) -> str:
    return f"http://127.0.0.1:{FIRST_STORE_PORT + STORES.index(store_id)}"


async def run_demo(*, products: int, keep_running: bool, language: str) -> int:
    main_task = asyncio.current_task()
    if main_task is not None:
        # SIGTERM cancels the demo like Ctrl+C, so the `finally` blocks stop the services.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    if servers_configured():
        return await _run_on_servers(
            products=products, keep_running=keep_running, language=language
        )
    return await _run_embedded(products=products, keep_running=keep_running, language=language)


async def _run_on_servers(*, products: int, keep_running: bool, language: str) -> int:
    broker_url = os.environ.get("LOJASYNC_BROKER_URL") or DEFAULT_BROKER_URL
    server = os.environ.get("LOJASYNC_DATABASE_SERVER") or DEFAULT_DATABASE_SERVER
    log_dir = Path(os.environ.get("LOJASYNC_DEMO_LOG_DIR", "var/demo"))
    group = ProcessGroup()
    try:
        await _check_servers(broker_url, server)
        services = _services(broker_url, server, log_dir)
        try:
            # Before anything is reset: a busy port may be a demo still running on the
            # very databases and queues that the reset drops.
            ensure_ports_free(services)
            await _reset(broker_url, server)
            for service in services:
                await group.start(service)
            await group.wait_ready()
        except PortInUse as busy:
            raise _port_in_use(busy) from busy
        except (TimeoutError, RuntimeError) as exc:
            raise _not_started(exc) from exc
        _say(
            language,
            f"Server mode: RabbitMQ at {redact_url(broker_url)}, PostgreSQL at "
            f"{redact_url(server)}. Services are up as separate processes (logs in {log_dir}/).",
            f"Modo servidores: RabbitMQ em {redact_url(broker_url)}, PostgreSQL em "
            f"{redact_url(server)}. Serviços no ar em processos separados (logs em {log_dir}/).",
        )
        return await _scenarios(products=products, keep_running=keep_running, language=language)
    finally:
        await group.stop()


async def _run_embedded(*, products: int, keep_running: bool, language: str) -> int:
    directory = data_dir()
    log_file = Path(os.environ.get("LOJASYNC_DEMO_LOG_DIR", "var/demo")) / "embedded.log"
    layout = EmbeddedLayout(
        directory=directory,
        namespace=NAMESPACE,
        store_ids=STORES,
        orchestrator_port=ORCHESTRATOR_PORT,
        gateway_port=GATEWAY_PORT,
        erp_port=ERP_PORT,
        first_store_port=FIRST_STORE_PORT,
    )
    services = EmbeddedServices(layout)
    ports = {
        "sync-orchestrator": ORCHESTRATOR_PORT,
        "erp-gateway": GATEWAY_PORT,
        "erp-standin": ERP_PORT,
        **{f"store-registry {store_id}": layout.store_port(store_id) for store_id in STORES},
    }
    try:
        for name, port in ports.items():
            if port_in_use(port):
                raise _port_in_use(PortInUse(name, port))
        _log_to_file(log_file)
        await services.reset()
        try:
            await services.start()
        except RuntimeError as exc:
            raise _not_started(exc) from exc
        _say(
            language,
            f"Embedded mode: every service in this process, on SQLite files in {directory}/ "
            f"and the in-process broker (log in {log_file}). Set LOJASYNC_BROKER_URL and "
            "LOJASYNC_DATABASE_SERVER to run on RabbitMQ and PostgreSQL instead.",
            f"Modo embutido: todos os serviços neste processo, em arquivos SQLite em "
            f"{directory}/ e com o broker em processo (log em {log_file}). Defina "
            "LOJASYNC_BROKER_URL e LOJASYNC_DATABASE_SERVER para usar RabbitMQ e PostgreSQL.",
        )
        return await _scenarios(products=products, keep_running=keep_running, language=language)
    finally:
        await services.stop()


def _log_to_file(path: Path) -> None:
    """Send this process's logs to `path`, so the services' lines do not mix with the demo's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _port_in_use(busy: PortInUse) -> DemoFailed:
    return DemoFailed(
        f"port {busy.port} for {busy.service} is in use; stop what runs there "
        "(a previous `lojasync demo --keep-running`?) and try again",
        f"a porta {busy.port} do {busy.service} está em uso; pare o que roda nela "
        "(um `lojasync demo --keep-running` anterior?) e tente de novo",
    )


def _not_started(exc: BaseException) -> DemoFailed:
    return DemoFailed(f"a service did not start: {exc}", f"um serviço não subiu: {exc}")


async def _scenarios(*, products: int, keep_running: bool, language: str) -> int:
    async with httpx.AsyncClient(timeout=60.0) as client:
        await _load_catalog(client, products, language)
        await _customer_flow(client, language)
        await _rejected_edit(client, language)
        await _store_price_table(client, language)
        report = await compare_stores(f"http://127.0.0.1:{ORCHESTRATOR_PORT}", client=client)
    print_report(report, language, output=console)
    if keep_running:
        _say(
            language,
            "Services keep running; press Ctrl+C to stop them.",
            "Os serviços continuam no ar; Ctrl+C para pará-los.",
        )
        await asyncio.Event().wait()
    return 0 if report.converged else 1


async def _wait_converged(
    client: httpx.AsyncClient, expected: dict[str, int], timeout: float
) -> ConvergenceReport:
    def done(report: ConvergenceReport) -> bool:
        held = {entity: summary["count"] for entity, summary in report.orchestrator.items()}
        return (
            len(report.stores) == len(STORES)
            and all(held.get(entity, 0) >= count for entity, count in expected.items())
            and report.converged
        )

    return await _until(
        lambda: compare_stores(f"http://127.0.0.1:{ORCHESTRATOR_PORT}", client=client),
        done,
        timeout,
        "convergence of every store",
    )


async def _load_catalog(client: httpx.AsyncClient, products: int, language: str) -> None:
    tables = load_reference_tables()
    catalog = build_catalog(tables, products=products, store_ids=STORES)
    records = list(catalog.ordered())
    reference = [entity for entity, _ in records if entity in REFERENCE_ENTITIES]
    expected: dict[str, int] = {}
    for entity, _ in records:
        expected[entity] = expected.get(entity, 0) + 1

    _say(
        language,
        f"Pushing {len(records):,} records to the ERP gateway ({len(reference):,} from the real "
        f"NCM, CEST, CFOP, CST and IBGE tables, {products:,} products with their prices)...",
        f"Enviando {_pt(len(records))} registros ao ERP gateway ({_pt(len(reference))} das "
        f"tabelas reais de NCM, CEST, CFOP, CST e municípios do IBGE, {_pt(products)} produtos "
        "com seus preços)...",
    )
    started = time.perf_counter()
    totals = await push_catalog(f"http://127.0.0.1:{GATEWAY_PORT}", records, client=client)
    pushed = time.perf_counter() - started
    await _wait_converged(client, expected, timeout=600)
    elapsed = time.perf_counter() - started
    _say(
        language,
        f"  accepted {totals['accepted']:,}, rejected {totals['rejected']:,} in {pushed:.1f} s; "
        f"all 3 stores converged after {elapsed:.1f} s "
        f"({len(records) / elapsed:,.0f} records/s to 3 stores).",
        f"  aceitos {_pt(totals['accepted'])}, rejeitados {_pt(totals['rejected'])} em "
        f"{_pt(pushed, 1)} s; as 3 lojas convergiram após {_pt(elapsed, 1)} s "
        f"({_pt(len(records) / elapsed)} registros/s para 3 lojas).",
    )


async def _customer_flow(client: httpx.AsyncClient, language: str) -> None:
    _say(
        language,
        "\n[1] A customer registered at the loja-1 counter",
        "\n[1] Cliente cadastrado no balcão da loja-1",
    )
    response = await client.post(
        f"{_store_url('loja-1')}/v1/records/customer",
        json={
            "fields": {
                "document": "529.982.247-25",
                "name": "Maria da Silva",
                "email": "maria@example.com.br",
                "municipality": "3550308",
            }
        },
    )
    response.raise_for_status()
    created = response.json()
    key = created["record_key"]
    _say(
        language,
        f"  loja-1 answered {response.status_code}, status {created['status']}",
        f"  loja-1 respondeu {response.status_code}, status {created['status']}",
    )

    confirmed = await _wait_view(
        client,
        f"{_store_url('loja-1')}/v1/records/customer/{key}",
        lambda view: view["status"] == "confirmed",
        "confirmation in loja-1",
    )
    _say(
        language,
        f"  loja-1: confirmed at revision {confirmed['revision']}",
        f"  loja-1: confirmado na revisão {confirmed['revision']}",
    )
    for store_id in ("loja-2", "loja-3"):
        other = await _wait_view(
            client,
            f"{_store_url(store_id)}/v1/records/customer/{key}",
            None,
            f"customer in {store_id}",
        )
        _say(
            language,
            f"  {store_id}: has {other['record']['name']} (revision {other['revision']})",
            f"  {store_id}: tem {other['record']['name']} (revisão {other['revision']})",
        )
    erp = await _wait_view(
        client,
        f"http://127.0.0.1:{ERP_PORT}/erp/records/customer/{key}",
        None,
        "customer in the ERP",
    )
    _say(
        language,
        f"  ERP: received CPF {erp['record']['document']} at revision {erp['revision']}",
        f"  ERP: recebeu o CPF {erp['record']['document']} na revisão {erp['revision']}",
    )


async def _rejected_edit(client: httpx.AsyncClient, language: str) -> None:
    _say(
        language,
        "\n[2] loja-2 tries to rename an ERP-owned product",
        "\n[2] A loja-2 tenta renomear um produto do ERP",
    )
    url = f"{_store_url('loja-2')}/v1/records/product/P000001"
    before = (await client.get(url)).json()
    response = await client.put(url, json={"fields": {"description": "NOME ALTERADO NA LOJA"}})
    detail = response.json()["detail"]
    after = (await client.get(url)).json()
    _say(
        language,
        f"  HTTP {response.status_code} {detail['code']}: {detail['message']}",
        f"  HTTP {response.status_code} {detail['code']}: {detail['message_pt_br']}",
    )
    unchanged = before["record"]["description"] == after["record"]["description"]
    _say(
        language,
        f"  the product is unchanged: {'yes' if unchanged else 'no'}",
        f"  o produto continua igual: {'sim' if unchanged else 'não'}",
    )
    response = await client.put(url, json={"fields": {"shelf_location": "CORREDOR 4 / PRAT 2"}})
    _say(
        language,
        f"  editing its store-local shelf_location instead: HTTP {response.status_code} "
        "(kept in loja-2 only)",
        f"  editando o campo local shelf_location: HTTP {response.status_code} (fica só na loja-2)",
    )


async def _store_price_table(client: httpx.AsyncClient, language: str) -> None:
    _say(
        language,
        "\n[3] New prices in loja-3's own price table",
        "\n[3] Novos preços na tabela própria da loja-3",
    )
    changed = [
        ("price", {"table": "LOJA-3", "product": f"P{number:06d}", "price": f"{number}.99"})
        for number in range(1, 6)
    ]
    totals = await push_catalog(f"http://127.0.0.1:{GATEWAY_PORT}", changed, client=client)
    _say(
        language,
        f"  gateway accepted {totals['accepted']} price(s)",
        f"  o gateway aceitou {totals['accepted']} preço(s)",
    )
    key = "LOJA-3:P000001"

    async def status_of(store_id: str) -> int:
        return (await client.get(f"{_store_url(store_id)}/v1/records/price/{key}")).status_code

    await _until(
        lambda: client.get(f"{_store_url('loja-3')}/v1/records/price/{key}"),
        lambda r: r.status_code == 200 and r.json()["record"]["price"] == "1.99",
        60,
        "new price in loja-3",
    )
    await _wait_converged(client, {}, timeout=60)
    for store_id in STORES:
        code = await status_of(store_id)
        has = code == 200
        _say(
            language,
            f"  {store_id}: {'has' if has else 'does not have'} {key}",
            f"  {store_id}: {'tem' if has else 'não tem'} {key}",
        )
