"""What a fault test sends, and the clients that send it while the faults happen.

The ERP stream is at least 10,000 changes pushed through the gateway's `POST /v1/changes`,
each with its own `change_id`. It starts with the products and prices of `build_catalog`.
Rounds of edits of the same records follow: new descriptions, new prices, three edits of
one product in a row, and deletes and re-creates. So the final value of a record depends
on the order of its changes.

Customers are created and edited through the stores' APIs while the stream runs. Each
edit is made at a store that already has the previous revision, so the expected final
state does not depend on timing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import count
from typing import Any

import httpx

from lojasync.reference import load_reference_tables
from lojasync_demo.catalog import build_catalog
from tests.faults.harness import POLL_SECONDS, STORES, FaultSystem

logger = logging.getLogger(__name__)

MIN_ERP_CHANGES = 10_000
BASE_PRICE_TABLE = "BASE"
# A product description has at most 120 characters, and the edit labels add up to 12.
_DESCRIPTION_PREFIX_MAX = 100

RecordId = tuple[str, str]
"""(entity, record key)"""


@dataclass(frozen=True)
class ErpChange:
    """One item of a push; `record` is None for a delete."""

    change_id: str
    entity: str
    record_key: str
    record: dict[str, Any] | None

    @property
    def record_id(self) -> RecordId:
        return (self.entity, self.record_key)

    def push_item(self) -> dict[str, Any]:
        if self.record is None:
            return {
                "entity": self.entity,
                "action": "delete",
                "key": self.record_key,
                "change_id": self.change_id,
            }
        return {
            "entity": self.entity,
            "action": "upsert",
            "record": self.record,
            "change_id": self.change_id,
        }


@dataclass
class ErpStream:
    """The ERP's changes: `setup` is pushed and decided first, then `batches` in order."""

    setup: list[ErpChange]
    batches: list[list[ErpChange]]

    def changes(self) -> Iterator[ErpChange]:
        yield from self.setup
        for batch in self.batches:
            yield from batch

    def history(self) -> dict[RecordId, list[ErpChange]]:
        """Return every record's changes in push order."""
        changes: dict[RecordId, list[ErpChange]] = defaultdict(list)
        for change in self.changes():
            changes[change.record_id].append(change)
        return dict(changes)

    def final_records(self) -> dict[RecordId, dict[str, Any] | None]:
        """Return the last pushed record of every record id; None when its last change deletes."""
        return {record_id: changes[-1].record for record_id, changes in self.history().items()}


def _record_key(entity: str, record: dict[str, Any]) -> str:
    if entity == "price":
        return f"{record['table']}:{record['product']}"
    return str(record["code"])


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


class _StreamBuilder:
    """Creates changes in push order and remembers the last record pushed for each key."""

    def __init__(self, change_id_prefix: str) -> None:
        self._prefix = change_id_prefix
        self._numbers = count(1)
        self.latest: dict[RecordId, dict[str, Any]] = {}
        self.original_descriptions: dict[str, str] = {}

    def upsert(self, entity: str, record: dict[str, Any]) -> ErpChange:
        key = _record_key(entity, record)
        self.latest[(entity, key)] = record
        return ErpChange(f"{self._prefix}-{next(self._numbers)}", entity, key, record)

    def delete(self, entity: str, key: str) -> ErpChange:
        self.latest.pop((entity, key))
        return ErpChange(f"{self._prefix}-{next(self._numbers)}", entity, key, None)

    def describe(self, code: str, label: str) -> ErpChange:
        """Push the product again with the label appended to its first description."""
        record = dict(self.latest[("product", code)])
        original = self.original_descriptions.setdefault(code, str(record["description"]))
        record["description"] = f"{original[:_DESCRIPTION_PREFIX_MAX]} {label}"
        return self.upsert("product", record)

    def reprice(self, key: str, increase: Decimal) -> ErpChange:
        record = dict(self.latest[("price", key)])
        record["price"] = _money(Decimal(str(record["price"])) + increase)
        return self.upsert("price", record)


Step = Callable[[], ErpChange]


def _run_round(units: list[list[Step]], rng: random.Random) -> list[ErpChange]:
    """Shuffle the units of a round and make their changes; a unit's steps stay together."""
    rng.shuffle(units)
    return [step() for unit in units for step in unit]


def build_erp_stream(
    *, products: int, seed: int, batch_size: int, change_id_prefix: str
) -> ErpStream:
    """Build the ERP stream on `products` products of the demo catalog.

    After the creates, three rounds follow. Round 1 renames half of the products, reprices
    half of the BASE prices and deletes up to 100 store-table prices. Round 2 renames and
    reprices the same records again, and renames a tenth of the products three times in a
    row (adjacent items, so mostly in one batch). Round 3 renames again and re-creates half
    of the deleted prices. Within a round the order is shuffled, so batches mix entities.
    """
    catalog = build_catalog(load_reference_tables(), products=products, seed=seed, store_ids=STORES)
    rng = random.Random(seed)
    builder = _StreamBuilder(change_id_prefix)

    setup = [builder.upsert("price_table", record) for record in catalog.records["price_table"]]

    prices = catalog.records["price"]
    base_prices = {str(p["product"]): p for p in prices if p["table"] == BASE_PRICE_TABLE}
    creates: list[ErpChange] = []
    for product in catalog.records["product"]:
        code = str(product["code"])
        creates.append(builder.upsert("product", dict(product)))
        creates.append(builder.upsert("price", dict(base_prices[code])))
    store_prices = [p for p in prices if p["table"] != BASE_PRICE_TABLE]
    creates.extend(builder.upsert("price", dict(price)) for price in store_prices)

    codes = [str(product["code"]) for product in catalog.records["product"]]
    renamed = rng.sample(codes, len(codes) // 2)
    repriced = [f"{BASE_PRICE_TABLE}:{code}" for code in rng.sample(codes, len(codes) // 2)]
    burst = rng.sample(codes, len(codes) // 10)
    store_price_keys = [_record_key("price", price) for price in store_prices]
    deleted = rng.sample(store_price_keys, min(100, len(store_price_keys) // 3))
    recreated = deleted[: len(deleted) // 2]

    def rename(code: str, label: str) -> list[Step]:
        return [lambda: builder.describe(code, label)]

    def reprice(key: str, increase: str) -> list[Step]:
        return [lambda: builder.reprice(key, Decimal(increase))]

    def delete(key: str) -> list[Step]:
        return [lambda: builder.delete("price", key)]

    def recreate(key: str) -> list[Step]:
        table, product = key.split(":", 1)
        price = _money(Decimal(str(base_prices[product]["price"])) + Decimal("1.00"))
        record = {"table": table, "product": product, "price": price}
        return [lambda: builder.upsert("price", record)]

    def rename_in_a_row(code: str) -> list[Step]:
        return [rename(code, f"RAJADA {n}")[0] for n in (1, 2, 3)]

    round_1 = [
        *(rename(code, "EDICAO 1") for code in renamed),
        *(reprice(key, "0.10") for key in repriced),
        *(delete(key) for key in deleted),
    ]
    round_2 = [
        *(rename(code, "EDICAO 2") for code in renamed),
        *(reprice(key, "0.20") for key in repriced),
        *(rename_in_a_row(code) for code in burst),
    ]
    round_3 = [
        *(rename(code, "EDICAO 3") for code in renamed),
        *(recreate(key) for key in recreated),
    ]
    changes = creates
    for units in (round_1, round_2, round_3):
        changes.extend(_run_round(units, rng))

    batches = [changes[start : start + batch_size] for start in range(0, len(changes), batch_size)]
    return ErpStream(setup=setup, batches=batches)


def expected_counts(
    final_records: dict[RecordId, dict[str, Any] | None], customers: Sequence[CustomerPlan]
) -> dict[str, int]:
    """Return the number of live records per entity that the orchestrator must hold."""
    counts: dict[str, int] = defaultdict(int)
    for (entity, _), record in final_records.items():
        if record is not None:
            counts[entity] += 1
    counts["customer"] += len(customers)
    return dict(counts)


def expected_store_counts(
    final_records: dict[RecordId, dict[str, Any] | None],
    customers: Sequence[CustomerPlan],
    store_id: str,
) -> dict[str, int]:
    """Return the number of live records per entity that store `store_id` must hold.

    A price table reaches the stores in its `stores` list (every store when empty), and a
    price reaches the stores of its price table.
    """
    table_stores: dict[str, list[str]] = {
        key: list(record.get("stores") or [])
        for (entity, key), record in final_records.items()
        if entity == "price_table" and record is not None
    }

    def reaches(entity: str, record: dict[str, Any]) -> bool:
        if entity == "price_table":
            stores = table_stores[str(record["code"])]
        elif entity == "price":
            stores = table_stores[str(record["table"])]
        else:
            stores = []
        return not stores or store_id in stores

    counts: dict[str, int] = defaultdict(int)
    for (entity, _), record in final_records.items():
        if record is not None and reaches(entity, record):
            counts[entity] += 1
    counts["customer"] += len(customers)
    return dict(counts)


# --- Customers --------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerPlan:
    """One customer: created with `names[0]` at `stores[0]`, then renamed at each step."""

    record_key: str
    document: str
    names: tuple[str, ...]
    stores: tuple[str, ...]

    @property
    def revisions(self) -> int:
        """The number of revisions the customer must end with: one per step."""
        return len(self.names)


def _cpf(rng: random.Random) -> str:
    """Return a random CPF with valid check digits (modulo 11, weights 10..2 then 11..2)."""
    while True:
        digits = [rng.randrange(10) for _ in range(9)]
        if len(set(digits)) > 1:
            break
    for weight_start in (10, 11):
        weights = range(weight_start, 1, -1)
        total = sum(digit * weight for digit, weight in zip(digits, weights, strict=True))
        remainder = total * 10 % 11
        digits.append(0 if remainder == 10 else remainder)
    return "".join(str(digit) for digit in digits)


def build_customers(*, customers: int, edits: int, seed: int) -> list[CustomerPlan]:
    """Plan `customers` customers, each created at one store and renamed `edits` times.

    Customer n is created at store n mod 3, and edit k is made at the next store in turn,
    so every store creates and edits customers.
    """
    rng = random.Random(seed)
    plans = []
    for number in range(customers):
        key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        names = tuple(f"Cliente {number:03d} versão {step}" for step in range(edits + 1))
        stores = tuple(STORES[(number + step) % len(STORES)] for step in range(edits + 1))
        plans.append(CustomerPlan(key, _cpf(rng), names, stores))
    return plans


# --- Progress ---------------------------------------------------------------------------


class Progress:
    """How far the ERP stream got; the fault and the customer clerk wait on it."""

    def __init__(self) -> None:
        self.batches_pushed = 0
        self.push_failures = 0
        self.push_seconds: list[float] = []
        """Seconds of each push that got a response."""
        self.store_writes: Counter[str] = Counter()
        """Customer writes that each store accepted with 200 or 202."""
        self._changed = asyncio.Condition()
        self._requests_started: dict[int, asyncio.Event] = defaultdict(asyncio.Event)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def batch_pushed(self) -> None:
        self.batches_pushed += 1
        await self._notify()

    async def push_failed(self) -> None:
        self.push_failures += 1
        await self._notify()

    async def store_write_accepted(self, store_id: str) -> None:
        self.store_writes[store_id] += 1
        await self._notify()

    def request_started(self, batch_index: int) -> None:
        self._requests_started[batch_index].set()

    async def wait_request_started(self, batch_index: int, timeout: float) -> None:
        """Wait until the pusher sent the first request of batch `batch_index`."""
        try:
            await asyncio.wait_for(self._requests_started[batch_index].wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"the request of batch {batch_index} was not sent within {timeout:.0f} s"
            ) from None

    async def wait_until(
        self, condition: Callable[[], bool], timeout: float, description: str
    ) -> None:
        """Wait until `condition()` holds; it is checked whenever the progress changes."""
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(condition), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{description} did not happen within {timeout:.0f} s (batches pushed: "
                f"{self.batches_pushed}, failed pushes: {self.push_failures})"
            ) from None

    def median_push_seconds(self) -> float:
        """Return the median time of the pushes so far, or 0.1 s before the first."""
        ordered = sorted(self.push_seconds)
        return ordered[len(ordered) // 2] if ordered else 0.1

    async def wait_batches(self, batches: int, timeout: float) -> None:
        await self.wait_until(
            lambda: self.batches_pushed >= batches, timeout, f"push of {batches} batches"
        )


# --- The ERP's side ---------------------------------------------------------------------


@dataclass(frozen=True)
class ItemResult:
    """The gateway's result for one pushed item."""

    status: str
    event_id: str | None
    replay: bool
    """True for the items of a committed batch that the ERP sent again when it rewound."""


@dataclass
class ErpPusher:
    """Pushes the ERP stream through the gateway in order, the way an ERP would.

    A push that fails (connection error, timeout or 5xx) is sent again with the same
    change ids until `retry_seconds` pass. With `rewind_batches` set, the pusher also
    rewinds after a failed push: it sends the `rewind_batches` batches before the failed
    one again before it retries, like an ERP that resumes from an older checkpoint. Those
    batches were committed, so every one of their items must come back as a duplicate.
    """

    client: httpx.AsyncClient
    gateway_url: str
    progress: Progress
    rewind_batches: int = 0
    retry_seconds: float = 120.0
    results: dict[str, list[ItemResult]] = field(default_factory=lambda: defaultdict(list))
    failures: list[str] = field(default_factory=list)
    _first_failure: dict[int, float] = field(default_factory=dict, init=False, repr=False)

    async def push_setup(self, changes: Sequence[ErpChange]) -> None:
        await self._push_until_answered(-1, changes, replay=False)

    async def push_batches(self, batches: Sequence[Sequence[ErpChange]]) -> None:
        """Push every batch in order; a failed batch is retried, after a rewind if set."""
        index = 0
        pushed = 0
        rewound: set[int] = set()
        while index < len(batches):
            answered = await self._push_once(index, batches[index], replay=index < pushed)
            if answered:
                index += 1
                if index > pushed:
                    pushed = index
                    await self.progress.batch_pushed()
                continue
            # Rewind once per batch, and only from a batch sent for the first time; a
            # replayed batch that fails is retried as it is.
            if self.rewind_batches and index == pushed and index not in rewound:
                rewound.add(index)
                index = max(0, index - self.rewind_batches)
            await self._wait_before_retry(index)

    async def _push_until_answered(
        self, index: int, batch: Sequence[ErpChange], *, replay: bool
    ) -> None:
        while not await self._push_once(index, batch, replay=replay):
            await self._wait_before_retry(index)

    async def _wait_before_retry(self, index: int) -> None:
        if time.monotonic() - self._failing_since(index) > self.retry_seconds:
            raise AssertionError(
                f"pushes of batch {index} kept failing for {self.retry_seconds:.0f} s: "
                f"{self.failures[-3:]}"
            )
        await asyncio.sleep(POLL_SECONDS)

    def _failing_since(self, index: int) -> float:
        return self._first_failure.setdefault(index, time.monotonic())

    async def _push_once(self, index: int, batch: Sequence[ErpChange], *, replay: bool) -> bool:
        """Send one batch; return False when the push failed in a way an ERP retries."""
        url = f"{self.gateway_url}/v1/changes"
        body = {"records": [change.push_item() for change in batch]}
        self.progress.request_started(index)
        started = time.monotonic()
        try:
            response = await self.client.post(url, json=body, timeout=60.0)
        except httpx.TransportError as exc:
            await self._failed(index, f"{type(exc).__name__}: {exc}")
            return False
        if response.status_code >= 500:
            await self._failed(index, f"HTTP {response.status_code}: {response.text[:300]}")
            return False
        if response.status_code != 200:
            raise AssertionError(
                f"the gateway rejected batch {index} with HTTP {response.status_code}: "
                f"{response.text[:1000]}"
            )
        self.progress.push_seconds.append(time.monotonic() - started)
        self._first_failure.pop(index, None)
        for result in response.json()["results"]:
            change = batch[result["index"]]
            self.results[change.change_id].append(
                ItemResult(result["status"], result.get("event_id"), replay)
            )
        return True

    async def _failed(self, index: int, reason: str) -> None:
        self.failures.append(f"batch {index}: {reason}")
        logger.info("push failed", extra={"batch": index, "reason": reason})
        self._failing_since(index)
        await self.progress.push_failed()

    def event_id(self, change_id: str) -> str | None:
        """Return the event id the gateway gave the change (a duplicate names the first)."""
        for result in self.results.get(change_id, []):
            if result.event_id is not None:
                return result.event_id
        return None


# --- The customers' side ----------------------------------------------------------------


@dataclass
class CustomerClerk:
    """Creates and renames customers through the stores' APIs, one chain per customer.

    Step k of every customer waits until `step_batches[k - 1]` ERP batches were pushed, so
    the customer changes are spread over the stream. Before an edit, the clerk waits until
    the editing store has the customer's previous revision, and sends that revision as
    `base_revision`. A request that fails with a connection error or a 5xx is sent again.
    A 409 to such a retry means that the first attempt was applied, which a read confirms.
    """

    client: httpx.AsyncClient
    store_urls: dict[str, str]
    progress: Progress
    step_batches: Sequence[int]
    timeout: float = 90.0
    failures: list[str] = field(default_factory=list)
    """Requests that failed and were sent again."""
    errors: list[str] = field(default_factory=list)
    """Why customer chains stopped before their last step."""

    async def run(self, plans: Sequence[CustomerPlan]) -> None:
        """Follow every plan; a chain that cannot go on is recorded in `errors`."""
        async with asyncio.TaskGroup() as group:
            for plan in plans:
                group.create_task(self._follow_or_record(plan))

    async def _follow_or_record(self, plan: CustomerPlan) -> None:
        try:
            await self._follow(plan)
        except AssertionError as exc:
            self.errors.append(f"customer {plan.record_key}: {exc}")

    async def _follow(self, plan: CustomerPlan) -> None:
        fields = {"id": plan.record_key, "document": plan.document, "name": plan.names[0]}
        await self._put(plan, 0, fields, base_revision=None)
        for step in range(1, len(plan.names)):
            await self.progress.wait_batches(self.step_batches[step - 1], self.timeout)
            await self._wait_for_revision(plan.stores[step], plan.record_key, step)
            await self._put(plan, step, {"name": plan.names[step]}, base_revision=step)

    def _url(self, store_id: str, key: str) -> str:
        return f"{self.store_urls[store_id]}/v1/records/customer/{key}"

    async def _put(
        self, plan: CustomerPlan, step: int, fields: dict[str, Any], *, base_revision: int | None
    ) -> None:
        url = self._url(plan.stores[step], plan.record_key)
        body: dict[str, Any] = {"fields": fields}
        if base_revision is not None:
            body["base_revision"] = base_revision
        deadline = time.monotonic() + self.timeout
        retried = False
        while True:
            try:
                response = await self.client.put(url, json=body)
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code in (200, 202):
                    await self.progress.store_write_accepted(plan.stores[step])
                    return
                if response.status_code == 409 and retried:
                    await self._confirm_applied(plan, step)
                    await self.progress.store_write_accepted(plan.stores[step])
                    return
                reason = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code < 500:
                    raise AssertionError(f"PUT {url} (step {step}) failed: {reason}")
            self.failures.append(f"PUT {url} (step {step}): {reason}")
            retried = True
            if time.monotonic() > deadline:
                raise AssertionError(f"PUT {url} kept failing for {self.timeout:.0f} s: {reason}")
            await asyncio.sleep(POLL_SECONDS)

    async def _confirm_applied(self, plan: CustomerPlan, step: int) -> None:
        url = self._url(plan.stores[step], plan.record_key)
        response = await self.client.get(url)
        view = response.json() if response.status_code == 200 else None
        if view is None or view["record"].get("name") != plan.names[step]:
            raise AssertionError(
                f"PUT {url} (step {step}) was sent again and returned 409, but the store has "
                f"{view!r}, not the name {plan.names[step]!r}"
            )

    async def _wait_for_revision(self, store_id: str, key: str, revision: int) -> None:
        url = self._url(store_id, key)
        deadline = time.monotonic() + self.timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                response = await self.client.get(url)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                self.failures.append(f"GET {url}: {last}")
            else:
                if response.status_code == 200:
                    view = response.json()
                    if view["status"] == "confirmed" and view["revision"] >= revision:
                        return
                    last = view
                else:
                    last = f"HTTP {response.status_code}"
                    if response.status_code >= 500:
                        self.failures.append(f"GET {url}: {last}")
            await asyncio.sleep(POLL_SECONDS)
        raise AssertionError(
            f"{store_id} did not have revision {revision} of customer {key} within "
            f"{self.timeout:.0f} s; last response: {last!r}"
        )


# --- One run ----------------------------------------------------------------------------

Fault = Callable[[Progress], Coroutine[Any, Any, None]]


@dataclass
class WorkloadRun:
    """What the clients saw while the stream ran."""

    pusher: ErpPusher
    clerk: CustomerClerk
    progress: Progress
    seconds: float


async def run_workload(
    client: httpx.AsyncClient,
    system: FaultSystem,
    stream: ErpStream,
    customers: Sequence[CustomerPlan],
    fault: Fault,
    *,
    rewind_batches: int = 0,
) -> WorkloadRun:
    """Push the stream and make the customer changes while `fault` runs beside them.

    The price tables are pushed first, and the stream starts once the orchestrator has
    decided them all. Returns when the last batch was pushed, the last customer change
    was made and the fault returned. When the pusher or the fault raises, the other tasks
    are cancelled.
    """
    progress = Progress()
    pusher = ErpPusher(client, system.gateway_url, progress, rewind_batches=rewind_batches)
    edits = max(plan.revisions for plan in customers) - 1
    batches = len(stream.batches)
    step_batches = [batches * step // (edits + 1) for step in range(1, edits + 1)]
    clerk = CustomerClerk(
        client, {store_id: system.url(store_id) for store_id in STORES}, progress, step_batches
    )

    started = time.monotonic()
    system.note("stream started")
    await pusher.push_setup(stream.setup)
    await _wait_for_records(client, system.orchestrator_url, stream.setup)
    async with asyncio.TaskGroup() as group:
        group.create_task(pusher.push_batches(stream.batches))
        group.create_task(clerk.run(customers))
        group.create_task(fault(progress))
    system.note("stream ended")
    return WorkloadRun(pusher, clerk, progress, time.monotonic() - started)


async def _wait_for_records(
    client: httpx.AsyncClient,
    orchestrator_url: str,
    changes: Sequence[ErpChange],
    timeout: float = 60.0,
) -> None:
    deadline = time.monotonic() + timeout
    missing = [change.record_id for change in changes]
    while missing:
        entity, key = missing[0]
        response = await client.get(f"{orchestrator_url}/v1/records/{entity}/{key}")
        if response.status_code == 200:
            missing.pop(0)
            continue
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the orchestrator did not decide {missing} within {timeout:.0f} s"
            )
        await asyncio.sleep(POLL_SECONDS)


# --- The workload every fault test runs ---------------------------------------------------

PRODUCTS = 2000
BATCH_SIZE = 500
CUSTOMERS = 30
CUSTOMER_EDITS = 3
SEED = 2026


def standard_workload(change_id_prefix: str) -> tuple[ErpStream, list[CustomerPlan]]:
    """Return the ERP stream (10,000 changes or more) and the customer plans of one test."""
    stream = build_erp_stream(
        products=PRODUCTS, seed=SEED, batch_size=BATCH_SIZE, change_id_prefix=change_id_prefix
    )
    changes = sum(1 for _ in stream.changes())
    if changes < MIN_ERP_CHANGES:
        raise ValueError(f"the ERP stream has {changes} changes, fewer than {MIN_ERP_CHANGES}")
    customers = build_customers(customers=CUSTOMERS, edits=CUSTOMER_EDITS, seed=SEED)
    return stream, customers


def describe_run(run: WorkloadRun, system: FaultSystem, settle_seconds: float) -> str:
    """Summarize a run in one line, for the test output."""
    duplicates = sum(
        1
        for results in run.pusher.results.values()
        for result in results
        if result.status == "duplicate"
    )
    # A change whose first push failed and whose next push was reported as a duplicate was
    # committed by the failed request.
    committed_unanswered = sum(
        1
        for results in run.pusher.results.values()
        if results and results[0].status == "duplicate" and not results[0].replay
    )
    return (
        f"workload ran {run.seconds:.1f} s ({run.progress.batches_pushed} batches, "
        f"{run.progress.push_failures} failed pushes, {duplicates} duplicates reported, "
        f"{committed_unanswered} changes committed by a push that got no response), "
        f"{len(run.clerk.failures)} failed store requests, settled {settle_seconds:.1f} s later; "
        f"faults: {system.describe_timeline() or 'none'}"
    )
