"""Concurrent, repeated and reordered changes of one customer, across every service.

Two stores and the ERP change one customer at the same moment. The outcome must follow
the policy: on one field the ERP wins over the stores, and the newest store edit wins
between stores, while edits of different fields merge. Every store and the ERP must end
with the orchestrator's record. The ERP's copy is the newer of its own last push and
the last revision delivered to it (see `ErpLedger`). Each test runs on the servers and
in embedded mode (see the `backend` fixture).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lojasync.convergence import ConvergenceReport
from lojasync.envelope import ALL_STORES_TARGET, RECORD_RESOLVED, resolved_key, store_target
from tests.conftest import Backend
from tests.integration.system import (
    STORES,
    VALID_CPF,
    ErpCopy,
    ErpLedger,
    EventTap,
    System,
    TappedMessage,
    running_system,
    settle,
    store_url,
)
from tests.support import eventually

pytestmark = pytest.mark.integration

CUSTOMER = "customer"
Record = dict[str, Any]


@pytest.fixture
async def system(backend: Backend, namespace: str, tmp_path: Path) -> AsyncIterator[System]:
    async with running_system(
        backend.broker_url, namespace, backend.fresh_database, tmp_path
    ) as running:
        yield running


def customer(key: str, **fields: Any) -> Record:
    """Return a customer as the catalog normalizes it: every field present."""
    record: Record = {
        "id": key,
        "document": VALID_CPF,
        "name": "Maria da Silva",
        "email": None,
        "phone": None,
        "municipality": None,
    }
    return {**record, **fields}


async def erp_push(system: System, ledger: ErpLedger, record: Record) -> dict[str, Any]:
    """Push a customer from the ERP, wait for the orchestrator's decision and return it."""
    results = await system.push_items([{"entity": CUSTOMER, "action": "upsert", "record": record}])
    assert results[0]["status"] == "accepted", results[0]
    decision = await system.decision_on(CUSTOMER, record["id"], results[0]["event_id"])
    if decision["kind"] == "resolved":
        ledger.pushed(CUSTOMER, record["id"], decision["revision"], record)
    return decision


async def registered_customer(system: System, ledger: ErpLedger) -> Record:
    """Register a customer from the ERP and wait until every store holds revision 1."""
    record = customer(str(uuid.uuid4()))
    await erp_push(system, ledger, record)
    for store_id in STORES:
        await held_at_revision(system, store_id, record["id"], 1)
    return record


async def held_at_revision(system: System, store_id: str, key: str, revision: int) -> None:
    await eventually(
        lambda: system.record(store_id, CUSTOMER, key),
        until=lambda view: view is not None and view["revision"] == revision,
        what=f"customer {key} at revision {revision} in {store_id}",
    )


async def store_edit(
    system: System, store_id: str, key: str, fields: Record, base_revision: int
) -> httpx.Response:
    return await system.client.put(
        f"{store_url(store_id)}/v1/records/{CUSTOMER}/{key}",
        json={"fields": fields, "base_revision": base_revision},
    )


@dataclass(frozen=True)
class Outcome:
    """What the orchestrator, each store and the ERP hold of one customer."""

    central: dict[str, Any] | None
    stores: dict[str, dict[str, Any] | None]
    erp: ErpCopy | None
    report: ConvergenceReport

    def caught_up(self, revision: int) -> bool:
        """Tell whether every place has `revision` and no store has a pending edit.

        The ERP must also hold the central record: when its push was merged with store
        edits, its own copy of the push has the same revision until the merged record is
        delivered to it.
        """
        if self.central is None or self.central["revision"] != revision:
            return False
        for view in self.stores.values():
            if view is None or view["revision"] != revision or view["pending_action"]:
                return False
        return (
            self.erp is not None
            and self.erp.revision == revision
            and self.erp.record == self.central["record"]
            and self.report.converged
        )


async def settled_outcome(system: System, ledger: ErpLedger, key: str, revision: int) -> Outcome:
    """Wait until every place holds the customer's `revision`, or 30 s passed, and return
    what each holds."""

    async def snapshot() -> Outcome:
        return Outcome(
            central=await system.central_record(CUSTOMER, key),
            stores={store_id: await system.record(store_id, CUSTOMER, key) for store_id in STORES},
            erp=await ledger.copy(system, CUSTOMER, key),
            report=await system.report(),
        )

    return await settle(snapshot, until=lambda outcome: outcome.caught_up(revision), timeout=30)


def confirmed(view: dict[str, Any] | None) -> Record | None:
    return None if view is None else view["confirmed"]


async def test_same_field_erp_wins_over_stores(system: System) -> None:
    ledger = ErpLedger()
    record = await registered_customer(system, ledger)
    key = record["id"]

    first, second, decision = await asyncio.gather(
        store_edit(system, "loja-1", key, {"name": "Maria Loja Um"}, 1),
        store_edit(system, "loja-2", key, {"name": "Maria Loja Dois"}, 1),
        erp_push(system, ledger, {**record, "name": "Maria do ERP"}),
    )
    outcome = await settled_outcome(system, ledger, key, revision=4)
    expected = {**record, "name": "Maria do ERP"}

    assert first.status_code == 202, first.json()
    assert second.status_code == 202, second.json()
    assert decision["kind"] == "resolved"
    assert outcome.central is not None
    assert outcome.central["record"] == expected
    for store_id in STORES:
        assert confirmed(outcome.stores[store_id]) == expected, store_id
    assert outcome.erp is not None
    assert outcome.erp.record == expected
    assert outcome.report.converged


async def test_different_fields_merge(system: System) -> None:
    ledger = ErpLedger()
    record = await registered_customer(system, ledger)
    key = record["id"]

    first, second, decision = await asyncio.gather(
        store_edit(system, "loja-1", key, {"email": "maria@example.com.br"}, 1),
        store_edit(system, "loja-2", key, {"phone": "1134567890"}, 1),
        erp_push(system, ledger, {**record, "name": "Maria do ERP"}),
    )
    outcome = await settled_outcome(system, ledger, key, revision=4)
    expected = {
        **record,
        "name": "Maria do ERP",
        "email": "maria@example.com.br",
        "phone": "1134567890",
    }

    assert first.status_code == 202, first.json()
    assert second.status_code == 202, second.json()
    assert decision["kind"] == "resolved"
    assert outcome.central is not None
    assert outcome.central["record"] == expected
    for store_id in STORES:
        assert confirmed(outcome.stores[store_id]) == expected, store_id
    assert outcome.erp is not None
    assert outcome.erp.record == expected
    assert outcome.report.converged


async def test_same_field_newest_store_wins(system: System) -> None:
    ledger = ErpLedger()
    record = await registered_customer(system, ledger)
    key = record["id"]
    names = {"store:loja-1": "Maria Loja Um", "store:loja-2": "Maria Loja Dois"}

    first, second = await asyncio.gather(
        store_edit(system, "loja-1", key, {"name": names["store:loja-1"]}, 1),
        store_edit(system, "loja-2", key, {"name": names["store:loja-2"]}, 1),
    )
    outcome = await settled_outcome(system, ledger, key, revision=3)
    events = await system.central_events(CUSTOMER, key)
    newest = events[-1]
    expected = {**record, "name": names[newest["origin"]]}

    assert first.status_code == 202, first.json()
    assert second.status_code == 202, second.json()
    assert [event["revision"] for event in events] == [1, 2, 3]
    assert outcome.central is not None
    assert outcome.central["record"] == expected
    for store_id in STORES:
        assert confirmed(outcome.stores[store_id]) == expected, store_id
    assert outcome.erp is not None
    assert outcome.erp.record == expected


async def test_erp_receives_merge_of_its_push(system: System) -> None:
    ledger = ErpLedger()
    record = await registered_customer(system, ledger)
    key = record["id"]
    store_response = await store_edit(system, "loja-1", key, {"email": "maria@example.com.br"}, 1)
    await system.settled_record("loja-1", CUSTOMER, key)

    # The ERP changes the name on its copy from before the store's edit reached it.
    decision = await erp_push(system, ledger, {**record, "name": "Maria do ERP"})
    outcome = await settled_outcome(system, ledger, key, revision=3)
    expected = {**record, "name": "Maria do ERP", "email": "maria@example.com.br"}

    assert store_response.status_code == 202, store_response.json()
    assert decision["kind"] == "resolved"
    assert outcome.central is not None
    assert outcome.central["record"] == expected
    for store_id in STORES:
        assert confirmed(outcome.stores[store_id]) == expected, store_id
    assert outcome.erp is not None
    assert outcome.erp.record == expected


async def test_repeated_or_older_revisions_ignored(system: System) -> None:
    ledger = ErpLedger()
    async with EventTap(system.broker_url, system.namespace, ["resolved.customer.#"]) as tap:
        record = await registered_customer(system, ledger)
        key = record["id"]
        await store_edit(system, "loja-1", key, {"email": "maria@example.com.br"}, 1)
        await system.settled_record("loja-1", CUSTOMER, key)
        await erp_push(system, ledger, {**record, "name": "Maria do ERP"})
        before = await settled_outcome(system, ledger, key, revision=3)
        to_all = await eventually(
            lambda: _value(resolved_for_every_store(tap, key)),
            until=lambda found: len(found) == 3,
            what="three resolved events for every store",
        )

        for message in reversed(to_all):
            await tap.republish(message, resolved_key(CUSTOMER, store_target("loja-1")))
        for message in to_all[:2]:
            older = message.envelope.model_copy(update={"id": str(uuid.uuid4())})
            await tap.publish_body(
                older.to_bytes(),
                resolved_key(CUSTOMER, store_target("loja-2")),
                headers=message.headers,
                message_id=older.id,
                message_type=message.message_type,
                content_type=message.content_type,
            )
        # Each store's queue is FIFO, so once a later customer arrives, the copies were handled.
        await registered_customer(system, ledger)
        after = await settled_outcome(system, ledger, key, revision=3)

    assert [message.envelope.revision for message in to_all] == [1, 2, 3]
    for store_id in STORES:
        assert after.stores[store_id] == before.stores[store_id], store_id
    assert after.report.converged


def resolved_for_every_store(tap: EventTap, key: str) -> list[TappedMessage]:
    """Return the tapped `record.resolved` events of a customer routed to every store."""
    return [
        message
        for message in tap.of_record(RECORD_RESOLVED, CUSTOMER, key)
        if message.routing_key == resolved_key(CUSTOMER, ALL_STORES_TARGET)
    ]


async def _value(value: Any) -> Any:
    return value
