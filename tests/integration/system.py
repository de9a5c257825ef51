"""Every service together, in one process, on the servers or in embedded mode.

The orchestrator, the ERP gateway with the ERP stand-in behind it, and three store
registries run as ASGI apps in the test's event loop. HTTP between them goes through
httpx's ASGI transport, and every event goes through the broker. A store registry can
be stopped and started again on its own database, as a restarted process would be.
The broker URL and the databases decide the mode: RabbitMQ and PostgreSQL, or the
embedded broker and SQLite files.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI

from erp_gateway.app import create_app as create_gateway_app
from erp_gateway.settings import GatewaySettings
from lojasync.convergence import ConvergenceReport, compare_stores
from lojasync.embedded_broker import EmbeddedBroker
from lojasync.envelope import CONTENT_TYPE, Envelope
from lojasync.messaging import Broker
from lojasync.packing import BATCH_CONTENT_TYPE
from lojasync.partitioning import outgoing_event
from lojasync.persistence import OutgoingEvent
from lojasync.policy import BUNDLED_POLICY, load_policy
from lojasync.service import create_broker
from lojasync.topology import PARTITION_HEADER
from lojasync_demo.erp_standin import ErpStandin, ErpStandinSettings, push_catalog
from lojasync_demo.erp_standin import create_app as create_standin_app
from store_registry.app import create_app as create_store_app
from store_registry.settings import StoreSettings
from sync_orchestrator.app import create_app as create_orchestrator_app
from sync_orchestrator.settings import OrchestratorSettings
from tests.support import event_bodies, eventually

STORES = ("loja-1", "loja-2", "loja-3")
# This store runs a policy file in which stores may edit products, as a store with an
# outdated policy would. Its product edits reach the orchestrator, which rejects them.
OUTDATED_POLICY_STORE = "loja-3"
ORCHESTRATOR = "http://orchestrator.test"
GATEWAY = "http://gateway.test"
ERP = "http://erp.test"
VALID_CPF = "52998224725"

T = TypeVar("T")


def store_url(store_id: str) -> str:
    return f"http://{store_id}.test"


class AppRouter(httpx.AsyncBaseTransport):
    """Send each request to the ASGI app mounted for its host.

    Unlike httpx's `mounts`, an app can be unmounted and replaced while the client stays
    open, which a store restart needs. A request to a host with no app fails with
    httpx.ConnectError, as a request to a stopped process would.
    """

    def __init__(self) -> None:
        self._transports: dict[str, httpx.ASGITransport] = {}

    def mount(self, base_url: str, app: FastAPI) -> None:
        self._transports[httpx.URL(base_url).host] = httpx.ASGITransport(app=app)

    def unmount(self, base_url: str) -> None:
        self._transports.pop(httpx.URL(base_url).host, None)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._transports.get(request.url.host)
        if transport is None:
            raise httpx.ConnectError(f"no app is running at {request.url.host}", request=request)
        return await transport.handle_async_request(request)


@dataclass
class System:
    client: httpx.AsyncClient
    """Reaches every app by its base URL."""
    namespace: str
    broker_url: str
    router: AppRouter
    store_settings: dict[str, StoreSettings]
    _store_lifespans: dict[str, AsyncExitStack] = field(default_factory=dict)

    # --- Store processes ------------------------------------------------------------------

    def running(self, store_id: str) -> bool:
        return store_id in self._store_lifespans

    async def start_store(self, store_id: str) -> None:
        """Build a new app for the store on its database and enter its lifespan."""
        if self.running(store_id):
            return
        app = create_store_app(self.store_settings[store_id])
        lifespan = AsyncExitStack()
        await lifespan.enter_async_context(app.router.lifespan_context(app))
        self._store_lifespans[store_id] = lifespan
        self.router.mount(store_url(store_id), app)

    async def stop_store(self, store_id: str) -> None:
        """Exit the store's lifespan: its consumer, outbox relay and connections stop."""
        lifespan = self._store_lifespans.pop(store_id, None)
        if lifespan is None:
            return
        self.router.unmount(store_url(store_id))
        await lifespan.aclose()

    async def restart_store(self, store_id: str) -> None:
        await self.stop_store(store_id)
        await self.start_store(store_id)

    async def stop_all_stores(self) -> None:
        for store_id in list(self._store_lifespans):
            await self.stop_store(store_id)

    # --- Reads and writes -----------------------------------------------------------------

    async def push(self, records: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        totals = await push_catalog(GATEWAY, records, client=self.client)
        return dict(totals)

    async def push_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send items in the push format (entity, action, record, key) and return the
        gateway's result of each."""
        response = await self.client.post(f"{GATEWAY}/v1/changes", json={"records": items})
        response.raise_for_status()
        results: list[dict[str, Any]] = response.json()["results"]
        return results

    async def record(self, store_id: str, entity: str, key: str) -> dict[str, Any] | None:
        url = f"{store_url(store_id)}/v1/records/{entity}/{key}"
        view: dict[str, Any] | None = await json_or_none(self.client, url)
        return view

    async def central_record(self, entity: str, key: str) -> dict[str, Any] | None:
        """Return the orchestrator's state of a record, or None when it never existed."""
        url = f"{ORCHESTRATOR}/v1/records/{entity}/{key}"
        state: dict[str, Any] | None = await json_or_none(self.client, url)
        return state

    async def central_events(self, entity: str, key: str) -> list[dict[str, Any]]:
        """Return the orchestrator's event log of a record, rejections included."""
        response = await self.client.get(f"{ORCHESTRATOR}/v1/records/{entity}/{key}/events")
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def erp_record(self, entity: str, key: str) -> dict[str, Any] | None:
        """Return the newest revision of a record the ERP stand-in received."""
        received: dict[str, Any] | None = await json_or_none(
            self.client, f"{ERP}/erp/records/{entity}/{key}"
        )
        return received

    async def decision_on(
        self, entity: str, key: str, change_id: str, timeout: float = 20.0
    ) -> dict[str, Any]:
        """Wait until the orchestrator logged its decision on the change with id
        `change_id` and return that log item (`kind` is "resolved" or "rejected")."""

        def decided(items: list[dict[str, Any]]) -> bool:
            return any(item["causation_id"] == change_id for item in items)

        items = await eventually(
            lambda: self.central_events(entity, key),
            until=decided,
            timeout=timeout,
            what=f"a decision on change {change_id} of {entity} {key}",
        )
        return next(item for item in items if item["causation_id"] == change_id)

    async def settled_record(
        self, store_id: str, entity: str, key: str, timeout: float = 20.0
    ) -> dict[str, Any] | None:
        """Wait until the store's record has no pending edit and return it."""
        view: dict[str, Any] | None = await eventually(
            lambda: self.record(store_id, entity, key),
            until=lambda found: found is None or found["pending_action"] is None,
            timeout=timeout,
            what=f"{entity} {key} settled in {store_id}",
        )
        return view

    async def report(self) -> ConvergenceReport:
        return await compare_stores(ORCHESTRATOR, client=self.client)

    async def converged(self, **expected_counts: int) -> ConvergenceReport:
        """Wait until every store matches the orchestrator, which has `expected_counts`."""

        def done(report: ConvergenceReport) -> bool:
            counts = {entity: summary["count"] for entity, summary in report.orchestrator.items()}
            return (
                len(report.stores) == len(STORES)
                and all(counts[entity] == count for entity, count in expected_counts.items())
                and report.converged
            )

        return await eventually(self.report, until=done, timeout=60, what="convergence")


async def json_or_none(client: httpx.AsyncClient, url: str) -> Any:
    response = await client.get(url)
    return response.json() if response.status_code == 200 else None


async def settle(
    probe: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], bool],
    timeout: float,
    interval: float = 0.05,
) -> T:
    """Call `probe` until `until(result)` is true or `timeout` seconds passed.

    Returns the last result either way, so that the caller's asserts name what differs.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if until(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval)


def policy_with_shared_products(directory: Path) -> Path:
    """Write a policy file where stores may edit products: a store running an outdated policy."""
    text = BUNDLED_POLICY.read_text()
    start = text.index("  product:\n")
    end = text.index("  tax_rule:\n")
    shared = (
        "  product:\n    owner: shared\n    erp: [create, edit, delete]\n"
        "    stores: [create, edit]\n    distribution: all\n    conflict: field-merge\n"
        "    store_local: [shelf_location]\n"
    )
    path = directory / "outdated-policy.yaml"
    path.write_text(text[:start] + shared + text[end:])
    return path


DatabaseFactory = Callable[[str], Awaitable[str]]


@asynccontextmanager
async def running_system(
    broker_url: str,
    namespace: str,
    fresh_database: DatabaseFactory,
    tmp_path: Path,
    *,
    store_broker_urls: Mapping[str, str] | None = None,
) -> AsyncIterator[System]:
    """Start every service in this event loop and stop them all on exit.

    `store_broker_urls` gives some stores another broker URL, such as a proxy whose link
    a test can cut.
    """
    async with AsyncExitStack() as stack:
        common: dict[str, Any] = {
            "broker_url": broker_url,
            "namespace": namespace,
            "outbox_poll_seconds": 0.05,
        }
        router = AppRouter()

        async def serve(app: FastAPI, url: str) -> None:
            await stack.enter_async_context(app.router.lifespan_context(app))
            router.mount(url, app)

        orchestrator = create_orchestrator_app(
            OrchestratorSettings(**common, database_url=await fresh_database("orchestrator")),
            store_transport=router,
        )
        await serve(orchestrator, ORCHESTRATOR)

        standin = ErpStandin(ErpStandinSettings(database_url=await fresh_database("erp")))
        standin_app = create_standin_app(standin=standin)
        await serve(standin_app, ERP)

        gateway = create_gateway_app(
            GatewaySettings(
                **common,
                database_url=await fresh_database("gateway"),
                erp_callback_url=f"{ERP}/erp/changes",
                delivery_poll_seconds=0.1,
            ),
            transport=httpx.ASGITransport(app=standin_app),
        )
        await serve(gateway, GATEWAY)

        outdated_policy = policy_with_shared_products(tmp_path)
        store_settings = {
            store_id: StoreSettings(
                **{**common, "broker_url": (store_broker_urls or {}).get(store_id, broker_url)},
                store_id=store_id,
                database_url=await fresh_database(store_id),
                api_url=store_url(store_id),
                policy_file=outdated_policy if store_id == OUTDATED_POLICY_STORE else None,
            )
            for store_id in STORES
        }

        client = await stack.enter_async_context(httpx.AsyncClient(transport=router, timeout=30))
        system = System(client, namespace, broker_url, router, store_settings)
        stack.push_async_callback(system.stop_all_stores)
        for store_id in STORES:
            await system.start_store(store_id)

        await eventually(
            system.report,
            until=lambda report: len(report.stores) == len(STORES),
            what="three stores announced",
        )
        yield system


@dataclass(frozen=True)
class TappedMessage:
    """A copy of one message as the broker delivered it: routing key, headers and body."""

    routing_key: str
    body: bytes
    headers: Mapping[str, Any]
    message_id: str | None
    message_type: str | None
    content_type: str | None

    @property
    def envelope(self) -> Envelope:
        return Envelope.from_bytes(self.body)


class EventTap:
    """A queue on the namespace's exchange that copies every message it matches.

    `republish` sends a copied message again with the same routing key, id, type and
    partition header, as a broker redelivery or a publisher retry would. It works on
    RabbitMQ and on the embedded broker alike.
    """

    def __init__(self, broker_url: str, namespace: str, bindings: list[str]) -> None:
        self.broker_url = broker_url
        self.namespace = namespace
        self.bindings = bindings
        self.messages: list[TappedMessage] = []
        self._broker: Broker | EmbeddedBroker | None = None
        self._consumer = f"tap-{uuid.uuid4().hex[:10]}"

    async def __aenter__(self) -> EventTap:
        self._broker = create_broker(self.broker_url, self.namespace)
        await self._broker.connect(attempts=3)
        queue = await self._broker.declare_queue(self._consumer, self.bindings)
        await queue.consume(self._copy)  # type: ignore[arg-type]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._broker is not None:
            await self._broker.delete_queue(self._consumer)
            await self._broker.close()

    async def _copy(self, message: Any) -> None:
        # A pack is copied as its events, each as the single message it would have been.
        packed = message.content_type == BATCH_CONTENT_TYPE
        for body in event_bodies(message):
            envelope = Envelope.from_bytes(body) if packed else None
            self.messages.append(
                TappedMessage(
                    routing_key=message.routing_key or "",
                    body=body,
                    headers=dict(message.headers or {}),
                    message_id=envelope.id if envelope else message.message_id,
                    message_type=envelope.type if envelope else message.type,
                    content_type=CONTENT_TYPE if envelope else message.content_type,
                )
            )
        await message.ack()

    def of_record(self, event_type: str, entity: str, key: str) -> list[TappedMessage]:
        """Return the copied events of one type about one record, in arrival order."""
        found = []
        for message in self.messages:
            envelope = message.envelope
            if envelope.type == event_type and (envelope.entity, envelope.recordkey) == (
                entity,
                key,
            ):
                found.append(message)
        return found

    async def republish(self, message: TappedMessage, routing_key: str | None = None) -> None:
        """Publish a copied message again, to its own routing key unless one is given."""
        await self.publish_body(
            message.body,
            routing_key or message.routing_key,
            headers=message.headers,
            message_id=message.message_id,
            message_type=message.message_type,
            content_type=message.content_type,
        )

    async def publish_body(
        self,
        body: bytes,
        routing_key: str,
        *,
        headers: Mapping[str, Any],
        message_id: str | None,
        message_type: str | None,
        content_type: str | None = CONTENT_TYPE,
    ) -> None:
        """Publish `body` as the services do: persistent, and to the partition of its record
        when the copied message went to a partition."""
        assert self._broker is not None, "EventTap.publish_body needs `async with` first"
        assert content_type == CONTENT_TYPE, f"services publish {CONTENT_TYPE}, not {content_type}"
        partition_key = None
        if PARTITION_HEADER in headers:
            envelope = Envelope.from_bytes(body)
            partition_key = outgoing_event(envelope, routing_key, load_policy()).partition_key
        await self._broker.publish(
            [
                OutgoingEvent(
                    event_id=message_id or str(uuid.uuid4()),
                    routing_key=routing_key,
                    event_type=message_type or "",
                    body=body,
                    partition_key=partition_key,
                )
            ]
        )


@dataclass(frozen=True)
class ErpCopy:
    """One record in the ERP's copy, at the orchestrator's revision of that content."""

    revision: int
    record: dict[str, Any] | None
    """None when the record is deleted."""


class ErpLedger:
    """The ERP's own copy of shared records: what it pushed and what it was sent.

    The ERP stand-in stores only what the gateway delivers to it: store changes, and
    the ERP's own pushes only when the orchestrator merged them into something else. A
    test records each accepted push here with the revision the orchestrator gave it, and
    the ERP's copy of a record is the newer of its last push and the last delivery.
    """

    def __init__(self) -> None:
        self._pushed: dict[tuple[str, str], ErpCopy] = {}

    def pushed(self, entity: str, key: str, revision: int, record: dict[str, Any] | None) -> None:
        """Record an accepted push; `record` is None for a delete."""
        known = self._pushed.get((entity, key))
        if known is None or known.revision < revision:
            self._pushed[(entity, key)] = ErpCopy(revision, record)

    async def copy(self, system: System, entity: str, key: str) -> ErpCopy | None:
        """Return the ERP's copy of a record, or None when the ERP never had it."""
        own = self._pushed.get((entity, key))
        delivered = await system.erp_record(entity, key)
        received = (
            ErpCopy(delivered["revision"], None if delivered["deleted"] else delivered["record"])
            if delivered is not None
            else None
        )
        if own is None:
            return received
        if received is None or own.revision > received.revision:
            return own
        return received
