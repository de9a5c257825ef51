"""The exact final state after a fault test, read through the public APIs and asserted.

`wait_settled` polls the orchestrator, the stores and the ERP stand-in until they reach
the expected final state, stop changing, or the deadline passes.

`assert_exact_final_state` then checks, one assert per cause:
- the dead-letter queue is empty, and the gateway's push results are consistent;
- the orchestrator's counts, overall and per store, equal those of the stream;
- every record has the last value sent, and every store matches the orchestrator;
- each sampled record's event log has one `resolved` entry per change sent, in push
  order, with revisions 1..n;
- the stores' copies of the sampled records equal the orchestrator's;
- the ERP stand-in received each customer revision exactly once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import httpx

from lojasync.convergence import ConvergenceReport, compare_stores
from tests.faults.harness import STORES, FaultSystem, dead_letter_reasons, get_json, list_all
from tests.faults.workload import (
    CustomerPlan,
    ErpPusher,
    ErpStream,
    RecordId,
    WorkloadRun,
    expected_counts,
    expected_store_counts,
)

ENTITIES = ("price_table", "product", "price", "customer")
SETTLE_POLL_SECONDS = 1.0
# Problems listed in one assertion message; the count covers all of them.
SHOWN = 10


@dataclass
class Expectation:
    """The final state that the stream and the customer plans must produce."""

    stream: ErpStream
    customers: list[CustomerPlan]

    def __post_init__(self) -> None:
        self.history = self.stream.history()
        self.final_records = self.stream.final_records()
        self.counts = expected_counts(self.final_records, self.customers)
        self.store_counts = {
            store_id: expected_store_counts(self.final_records, self.customers, store_id)
            for store_id in STORES
        }

    def live_keys(self, entity: str) -> set[str]:
        if entity == "customer":
            return {plan.record_key for plan in self.customers}
        return {
            key
            for (name, key), record in self.final_records.items()
            if name == entity and record is not None
        }


@dataclass
class Snapshot:
    """One read of the whole system through its APIs."""

    counts: dict[str, int]
    """Live records per entity, from the orchestrator's `/v1/status`."""
    store_counts: dict[str, dict[str, int]]
    """The records per entity each store must have, from the orchestrator's `/v1/status`."""
    records: dict[str, dict[str, dict[str, Any]]]
    """The orchestrator's current state of every record, by entity and record key."""
    report: ConvergenceReport
    erp_customers: dict[str, dict[str, Any]]
    """The ERP stand-in's newest revision of every customer, by record key."""


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {entity: number for entity, number in sorted(counts.items()) if number}


async def take_snapshot(client: httpx.AsyncClient, system: FaultSystem) -> Snapshot:
    status = await get_json(client, f"{system.orchestrator_url}/v1/status")
    counts = {entity: summary["count"] for entity, summary in status["entities"].items()}
    store_counts = {
        store_id: {entity: summary["count"] for entity, summary in store["entities"].items()}
        for store_id, store in status["stores"].items()
    }
    records = {
        entity: await list_all(client, system.orchestrator_url, entity) for entity in ENTITIES
    }
    report = await compare_stores(system.orchestrator_url, client=client)
    erp = await get_json(client, f"{system.erp_url}/erp/records/customer")
    erp_customers = {item["record_key"]: item for item in erp["items"]}
    return Snapshot(_nonzero(counts), store_counts, records, report, erp_customers)


def value_mismatches(expectation: Expectation, snapshot: Snapshot) -> list[str]:
    """List the records whose orchestrator state differs from the last value sent."""
    problems: list[str] = []
    for entity in ENTITIES:
        held = set(snapshot.records[entity])
        expected = expectation.live_keys(entity)
        problems.extend(f"{entity} {key}: missing" for key in sorted(expected - held))
        problems.extend(f"{entity} {key}: not expected" for key in sorted(held - expected))
    for (entity, key), record in expectation.final_records.items():
        item = snapshot.records[entity].get(key)
        if record is None or item is None:
            continue
        for name, value in record.items():
            if item["record"].get(name) != value:
                problems.append(
                    f"{entity} {key}: {name} is {item['record'].get(name)!r}, "
                    f"the last pushed value is {value!r}"
                )
    for plan in expectation.customers:
        item = snapshot.records["customer"].get(plan.record_key)
        if item is None:
            continue
        if item["record"].get("name") != plan.names[-1]:
            problems.append(
                f"customer {plan.record_key}: name is {item['record'].get('name')!r}, "
                f"the last edit set {plan.names[-1]!r}"
            )
        if item["record"].get("document") != plan.document:
            problems.append(
                f"customer {plan.record_key}: document is {item['record'].get('document')!r}, "
                f"created as {plan.document!r}"
            )
    return problems


def erp_customer_mismatches(expectation: Expectation, snapshot: Snapshot) -> list[str]:
    """List the customers whose newest revision in the ERP stand-in is not the final one."""
    problems = []
    for plan in expectation.customers:
        item = snapshot.erp_customers.get(plan.record_key)
        if item is None:
            problems.append(f"customer {plan.record_key}: the ERP has not received it")
        elif item["revision"] != plan.revisions or item["record"].get("name") != plan.names[-1]:
            problems.append(
                f"customer {plan.record_key}: the ERP has revision {item['revision']} "
                f"named {item['record'].get('name')!r}; expected revision {plan.revisions} "
                f"named {plan.names[-1]!r}"
            )
    return problems


def settle_problems(expectation: Expectation, snapshot: Snapshot) -> list[str]:
    """List why the snapshot is not the expected final state; empty when it is."""
    problems = []
    if snapshot.counts != expectation.counts:
        problems.append(f"orchestrator counts {snapshot.counts} != expected {expectation.counts}")
    problems.extend(value_mismatches(expectation, snapshot)[:SHOWN])
    if len(snapshot.report.stores) != len(STORES) or not snapshot.report.converged:
        problems.append(f"stores not converged: {describe_report(snapshot.report)}")
    problems.extend(erp_customer_mismatches(expectation, snapshot)[:SHOWN])
    return problems


def describe_report(report: ConvergenceReport) -> str:
    """Summarize the stores and entities that differ from the orchestrator."""
    parts = []
    for store in report.stores:
        if not store.reachable:
            parts.append(f"{store.store_id}: unreachable ({store.error})")
            continue
        for entity in store.entities:
            if not entity.matches:
                parts.append(
                    f"{store.store_id}/{entity.entity}: has {entity.count}, expected "
                    f"{entity.expected_count}, pending {entity.pending}"
                )
    return "; ".join(parts) or f"{len(report.stores)} stores known, all matching"


def _fingerprint(snapshot: Snapshot) -> tuple[object, ...]:
    """Return the parts of a snapshot that change while the system makes progress."""
    stores = tuple(
        (store.store_id, entity.entity, entity.count, entity.digest, entity.pending)
        for store in snapshot.report.stores
        for entity in store.entities
    )
    central = tuple(
        (entity, summary.get("digest"))
        for entity, summary in sorted(snapshot.report.orchestrator.items())
    )
    erp = tuple(sorted((key, item["revision"]) for key, item in snapshot.erp_customers.items()))
    return (tuple(sorted(snapshot.counts.items())), central, stores, erp)


async def wait_settled(
    client: httpx.AsyncClient,
    system: FaultSystem,
    expectation: Expectation,
    timeout: float,
    quiet_seconds: float = 60.0,
) -> tuple[Snapshot, float]:
    """Poll until the system reaches the expected final state; return the last snapshot.

    The wait also ends when nothing changed for `quiet_seconds`, or at the deadline. The
    last snapshot is then returned as it is, so that the asserts that follow name what
    differs. Returns the snapshot and the seconds waited.
    """
    started = time.monotonic()
    deadline = started + timeout
    snapshot: Snapshot | None = None
    last_change = started
    last_fingerprint: tuple[object, ...] | None = None
    last_error = ""
    while True:
        try:
            snapshot = await take_snapshot(client, system)
        except (httpx.HTTPError, AssertionError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        else:
            if not settle_problems(expectation, snapshot):
                return snapshot, time.monotonic() - started
            fingerprint = _fingerprint(snapshot)
            if fingerprint != last_fingerprint:
                last_fingerprint = fingerprint
                last_change = time.monotonic()
        now = time.monotonic()
        if now > deadline or now - last_change > quiet_seconds:
            if snapshot is None:
                raise AssertionError(
                    f"no read of the system succeeded in {timeout:.0f} s: {last_error}"
                )
            return snapshot, now - started
        await asyncio.sleep(SETTLE_POLL_SECONDS)


def _listed(problems: list[str]) -> str:
    shown = "\n  ".join(problems[:SHOWN])
    return f"{len(problems)} problem(s):\n  {shown}"


def sample_records(expectation: Expectation, seed: int) -> list[RecordId]:
    """Pick records whose event logs are checked: edited, untouched, deleted and all tables."""
    rng = random.Random(seed)
    groups: dict[str, list[RecordId]] = defaultdict(list)
    for record_id, changes in sorted(expectation.history.items()):
        entity = record_id[0]
        if entity == "price_table":
            groups["tables"].append(record_id)
        elif changes[-1].record is None or any(change.record is None for change in changes):
            groups[f"{entity} deleted"].append(record_id)
        elif len(changes) >= 4:
            groups[f"{entity} edited often"].append(record_id)
        elif len(changes) > 1:
            groups[f"{entity} edited"].append(record_id)
        else:
            groups[f"{entity} untouched"].append(record_id)
    picked: list[RecordId] = []
    for name, members in sorted(groups.items()):
        picked.extend(rng.sample(members, min(len(members), 4 if name == "tables" else 15)))
    return picked


async def _event_log(
    client: httpx.AsyncClient, system: FaultSystem, entity: str, key: str
) -> list[dict[str, Any]]:
    body = await get_json(client, f"{system.orchestrator_url}/v1/records/{entity}/{key}/events")
    items: list[dict[str, Any]] = body["items"]
    return items


async def assert_exact_final_state(
    client: httpx.AsyncClient,
    system: FaultSystem,
    expectation: Expectation,
    snapshot: Snapshot,
    run: WorkloadRun,
    *,
    seed: int,
) -> None:
    """Assert the final state, one cause per assert; see the module docstring."""
    dead_letters, reasons = await dead_letter_reasons(system.broker_url, system.namespace)
    assert dead_letters == 0, f"{dead_letters} messages were dead-lettered, e.g. {reasons}"

    pushed = list(expectation.stream.changes())
    without_event = [c.change_id for c in pushed if run.pusher.event_id(c.change_id) is None]
    assert not without_event, f"pushed changes without an event id: {_listed(without_event)}"
    _assert_push_results(run.pusher)
    assert not run.clerk.errors, f"customer changes stopped: {_listed(run.clerk.errors)}"

    assert snapshot.counts == expectation.counts, "orchestrator counts differ from the stream"
    for store_id in STORES:
        held = _nonzero(snapshot.store_counts.get(store_id, {}))
        assert held == expectation.store_counts[store_id], (
            f"the orchestrator's expected counts for {store_id} differ from the stream"
        )
    values = value_mismatches(expectation, snapshot)
    assert not values, f"records differ from the last value sent: {_listed(values)}"
    assert len(snapshot.report.stores) == len(STORES), describe_report(snapshot.report)
    assert snapshot.report.converged, f"stores differ: {describe_report(snapshot.report)}"

    samples = sample_records(expectation, seed)
    await _assert_event_logs(client, system, expectation, run.pusher, samples)
    await _assert_customer_event_logs(client, system, expectation)
    await _assert_store_copies(client, system, expectation, snapshot, samples)
    await _assert_erp_received(client, system, expectation, snapshot)

    failed = await get_json(client, f"{system.gateway_url}/v1/deliveries", status="failed")
    assert failed["items"] == [], f"deliveries to the ERP failed: {failed['items'][:SHOWN]}"


def _assert_push_results(pusher: ErpPusher) -> None:
    rejected = [
        f"{change_id}: {result}"
        for change_id, results in pusher.results.items()
        for result in results
        if result.status == "rejected"
    ]
    assert not rejected, f"the gateway rejected pushed changes: {_listed(rejected)}"
    accepted_twice = [
        change_id
        for change_id, results in pusher.results.items()
        if sum(result.status == "accepted" for result in results) > 1
    ]
    assert not accepted_twice, f"change ids accepted twice: {_listed(accepted_twice)}"
    replayed_accepted = [
        change_id
        for change_id, results in pusher.results.items()
        if any(result.replay and result.status != "duplicate" for result in results)
    ]
    assert not replayed_accepted, (
        f"re-sent committed changes not reported as duplicates: {_listed(replayed_accepted)}"
    )
    several_events = [
        change_id
        for change_id, results in pusher.results.items()
        if len({result.event_id for result in results}) > 1
    ]
    assert not several_events, (
        f"duplicates that name another event than the first push: {_listed(several_events)}"
    )


async def _assert_event_logs(
    client: httpx.AsyncClient,
    system: FaultSystem,
    expectation: Expectation,
    pusher: ErpPusher,
    samples: list[RecordId],
) -> None:
    wrong_count: list[str] = []
    wrong_order: list[str] = []
    wrong_revisions: list[str] = []
    rejections: list[str] = []
    for entity, key in samples:
        events = await _event_log(client, system, entity, key)
        resolved = [event for event in events if event["kind"] == "resolved"]
        sent = expectation.history[(entity, key)]
        causes = [event["causation_id"] for event in resolved]
        expected_causes = [pusher.event_id(change.change_id) for change in sent]
        if len(resolved) != len(sent):
            wrong_count.append(f"{entity} {key}: {len(resolved)} resolved for {len(sent)} sent")
        elif causes != expected_causes:
            wrong_order.append(f"{entity} {key}: causes {causes} != pushed {expected_causes}")
        revisions = [event["revision"] for event in resolved]
        if revisions != list(range(1, len(resolved) + 1)):
            wrong_revisions.append(f"{entity} {key}: revisions {revisions}")
        rejections.extend(
            f"{entity} {key}: {event['reason']}" for event in events if event["kind"] != "resolved"
        )
    assert not wrong_count, f"not one resolved entry per change sent: {_listed(wrong_count)}"
    assert not wrong_order, f"resolved entries not in push order: {_listed(wrong_order)}"
    assert not wrong_revisions, f"revisions not 1..n without gaps: {_listed(wrong_revisions)}"
    assert not rejections, f"pushed changes were rejected: {_listed(rejections)}"


async def _assert_customer_event_logs(
    client: httpx.AsyncClient, system: FaultSystem, expectation: Expectation
) -> None:
    wrong_origins: list[str] = []
    wrong_revisions: list[str] = []
    rejections: list[str] = []
    for plan in expectation.customers:
        events = await _event_log(client, system, "customer", plan.record_key)
        resolved = [event for event in events if event["kind"] == "resolved"]
        origins = [event["origin"] for event in resolved]
        expected_origins = [f"store:{store_id}" for store_id in plan.stores]
        if origins != expected_origins:
            wrong_origins.append(f"customer {plan.record_key}: {origins} != {expected_origins}")
        revisions = [event["revision"] for event in resolved]
        if revisions != list(range(1, plan.revisions + 1)):
            wrong_revisions.append(f"customer {plan.record_key}: revisions {revisions}")
        rejections.extend(
            f"customer {plan.record_key}: {event['reason']}"
            for event in events
            if event["kind"] != "resolved"
        )
    assert not wrong_origins, f"customer changes not resolved once each: {_listed(wrong_origins)}"
    assert not wrong_revisions, f"customer revisions not 1..n: {_listed(wrong_revisions)}"
    assert not rejections, f"customer changes were rejected: {_listed(rejections)}"


async def _assert_store_copies(
    client: httpx.AsyncClient,
    system: FaultSystem,
    expectation: Expectation,
    snapshot: Snapshot,
    samples: list[RecordId],
) -> None:
    """Compare each store's copy of the sampled records and customers with the orchestrator."""
    checked = [*samples, *(("customer", plan.record_key) for plan in expectation.customers)]
    differences: list[str] = []
    for store_id in STORES:
        for entity, key in checked:
            central = snapshot.records[entity].get(key)
            if central is not None and central["stores"] and store_id not in central["stores"]:
                continue
            response = await client.get(f"{system.url(store_id)}/v1/records/{entity}/{key}")
            view = response.json() if response.status_code == 200 else None
            if central is None:
                if view is not None and view["status"] != "deleted":
                    differences.append(
                        f"{store_id} {entity} {key}: deleted centrally, {view['status']} here"
                    )
                continue
            if view is None:
                differences.append(f"{store_id} {entity} {key}: HTTP {response.status_code}")
            elif (view["status"], view["revision"], view["confirmed"]) != (
                "confirmed",
                central["revision"],
                central["record"],
            ):
                differences.append(
                    f"{store_id} {entity} {key}: {view['status']} revision {view['revision']} "
                    f"{view['confirmed']} != revision {central['revision']} {central['record']}"
                )
    assert not differences, f"store copies differ from the orchestrator: {_listed(differences)}"


async def _assert_erp_received(
    client: httpx.AsyncClient, system: FaultSystem, expectation: Expectation, snapshot: Snapshot
) -> None:
    received = await get_json(client, f"{system.erp_url}/erp/received", limit=10_000)
    customers = [item for item in received["items"] if item["entity"] == "customer"]
    calls = Counter((item["record_key"], item["revision"]) for item in customers)
    # Callbacks are at least once: a gateway killed after the ERP responded and before it
    # recorded the delivery calls again. A repeated call must be the same event (the ERP
    # deduplicates by event_id), and only the first call of an event may apply it.
    event_ids: dict[tuple[str, int], set[str]] = {}
    applied = Counter()
    for item in customers:
        record_revision = (item["record_key"], item["revision"])
        event_ids.setdefault(record_revision, set()).add(item["event_id"])
        applied[record_revision] += bool(item["applied"])
    distinct_events = [
        f"customer {key} revision {revision}: events {sorted(ids)}"
        for (key, revision), ids in event_ids.items()
        if len(ids) > 1
    ]
    applied_twice = [
        f"customer {key} revision {revision}: applied {number} times"
        for (key, revision), number in applied.items()
        if number > 1
    ]
    missing = [
        f"customer {plan.record_key} revision {revision}"
        for plan in expectation.customers
        for revision in range(1, plan.revisions + 1)
        if calls[(plan.record_key, revision)] == 0
    ]
    assert not missing, f"the ERP did not receive customer revisions: {_listed(missing)}"
    assert not distinct_events, (
        f"one customer revision reached the ERP as different events: {_listed(distinct_events)}"
    )
    assert not applied_twice, f"the ERP applied a customer revision twice: {_listed(applied_twice)}"
    final = erp_customer_mismatches(expectation, snapshot)
    assert not final, f"the ERP's customers are not the final ones: {_listed(final)}"
