"""The records the benchmark pushes, and how it pushes them to the ERP gateway.

Everything comes from `lojasync_demo.catalog.build_catalog`. The reference tables and
the parent records (units, suppliers, payment methods, tax rules, price tables) are
pushed once before any measurement. Each throughput run then pushes a slice of new
products with their prices, so every run inserts the same number of fresh records. The
latency runs change records that the throughput runs created.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from lojasync.catalog import record_key
from lojasync.reference import load_reference_tables
from lojasync_demo.catalog import BASE_PRICE_TABLE, Catalog, Record, build_catalog

MEASURED_ENTITIES = ("product", "price")
PUSH_PATH = "/v1/changes"
# The gateway's catalog check caps product descriptions at 120 characters.
DESCRIPTION_MAX = 120

Change = tuple[str, Record]
"""An entity name and the full record pushed as an upsert."""


class PushFailed(Exception):
    """The gateway responded to a push with an error status or rejected records in it."""


@dataclass(frozen=True)
class PushResult:
    """The gateway's response to one POST /v1/changes, and its timing."""

    accepted: int
    rejected: int
    sent_at: float
    """time.monotonic() before the request was sent."""
    returned_at: float
    """time.monotonic() when the response had arrived."""
    returned_wall: datetime


class Workload:
    """The catalog, split into the set-up records and one slice per throughput run."""

    def __init__(self, *, products_per_run: int, slices: int, store_ids: Sequence[str]) -> None:
        if products_per_run < 1:
            raise ValueError(f"products_per_run must be at least 1, got {products_per_run}")
        self.products_per_run = products_per_run
        self.store_ids = tuple(store_ids)
        self.catalog: Catalog = build_catalog(
            load_reference_tables(), products=products_per_run * slices, store_ids=store_ids
        )
        self._prices_by_product = _prices_by_product(self.catalog)
        self._table_scopes = {
            str(table["code"]): _scope(table) for table in self.catalog.records["price_table"]
        }

    def setup_records(self) -> list[Change]:
        """Return every record except products and prices, parents before children."""
        return [
            (entity, record)
            for entity, record in self.catalog.ordered()
            if entity not in MEASURED_ENTITIES
        ]

    def setup_counts(self) -> dict[str, int]:
        """Return the number of set-up records per entity, as the orchestrator counts them."""
        counts: dict[str, int] = {}
        for entity, _ in self.setup_records():
            counts[entity] = counts.get(entity, 0) + 1
        return counts

    def run_records(self, index: int) -> list[Change]:
        """Return slice `index`: its products, then their prices (base table first)."""
        products = self._products(index)
        changes: list[Change] = [("product", product) for product in products]
        prices = [
            price for product in products for price in self._prices_by_product[product["code"]]
        ]
        prices.sort(key=lambda price: price["table"] != BASE_PRICE_TABLE)
        changes.extend(("price", price) for price in prices)
        return changes

    def expected_store_counts(self, slices_done: int) -> dict[str, dict[str, int]]:
        """Return per store the products and prices it contains after `slices_done` slices."""
        counts = {store: {entity: 0 for entity in MEASURED_ENTITIES} for store in self.store_ids}
        for index in range(slices_done):
            for entity, record in self.run_records(index):
                for store in self.stores_of(entity, record):
                    counts[store][entity] += 1
        return counts

    def stores_of(self, entity: str, record: Record) -> tuple[str, ...]:
        """Return the stores in the scope of a product or price."""
        if entity == "price":
            scope = self._table_scopes[str(record["table"])]
            if scope:
                return scope
        return self.store_ids

    def latency_pool(self, slices: int) -> list[Change]:
        """Return the products and base-table prices of the first `slices` slices,
        alternating: every store receives each of them."""
        pool: list[Change] = []
        for index in range(slices):
            for product in self._products(index):
                pool.append(("product", product))
                for price in self._prices_by_product[product["code"]]:
                    if price["table"] == BASE_PRICE_TABLE:
                        pool.append(("price", price))
        return pool

    def _products(self, index: int) -> list[Record]:
        start = index * self.products_per_run
        products = self.catalog.records["product"][start : start + self.products_per_run]
        if len(products) < self.products_per_run:
            raise ValueError(f"the catalog has no slice {index}; build it with more slices")
        return products


def latency_changes(pool: Sequence[Change], generation: int, count: int) -> list[Change]:
    """Return `count` changes of distinct records of `pool`, each a real change.

    Generation `g` sets a product's description suffix to ` v<g>` and raises a price by
    `g` cents over the catalog's, so each generation differs from the records the
    throughput runs pushed and from every other generation. Consecutive generations take
    consecutive windows of the pool, wrapping around. Raises ValueError when the pool
    has fewer than `count` records.
    """
    if count > len(pool):
        raise ValueError(
            f"a latency run needs {count:,} distinct records but the throughput runs created "
            f"{len(pool):,}; raise --products or lower --latency-rate or --latency-seconds"
        )
    start = ((generation - 1) * count) % len(pool)
    window = [pool[(start + offset) % len(pool)] for offset in range(count)]
    return [_changed(entity, record, generation) for entity, record in window]


def _changed(entity: str, record: Record, generation: int) -> Change:
    changed = dict(record)
    if entity == "product":
        suffix = f" v{generation}"
        changed["description"] = (
            str(record["description"])[: DESCRIPTION_MAX - len(suffix)] + suffix
        )
    else:
        price = Decimal(str(record["price"])) + Decimal(generation) / 100
        changed["price"] = f"{price:.2f}"
    return entity, changed


def key_of(change: Change) -> tuple[str, str]:
    """Return the (entity, record key) of a change, as the stores key their rows."""
    entity, record = change
    return entity, record_key(entity, record)


def batches(changes: Sequence[Change], size: int) -> Iterator[Sequence[Change]]:
    for start in range(0, len(changes), size):
        yield changes[start : start + size]


async def push(
    client: httpx.AsyncClient, gateway_url: str, changes: Sequence[Change]
) -> PushResult:
    """POST one batch to the gateway and return its counts and timing.

    Raises PushFailed for an error status or when the gateway rejected a record, since
    every record of the catalog is valid and a rejection would distort the figures.
    """
    request = {"records": [{"entity": entity, "record": record} for entity, record in changes]}
    sent_at = time.monotonic()
    response = await client.post(f"{gateway_url}{PUSH_PATH}", json=request)
    returned_at = time.monotonic()
    returned_wall = datetime.now(UTC)
    if response.status_code != 200:
        raise PushFailed(
            f"POST {PUSH_PATH} responded with HTTP {response.status_code}: {response.text[:500]}"
        )
    body: Mapping[str, Any] = response.json()
    if body["rejected"] or body["duplicates"]:
        first = next(item for item in body["results"] if item["status"] != "accepted")
        raise PushFailed(
            f"the gateway did not accept {body['rejected']} record(s) and reported "
            f"{body['duplicates']} duplicate(s) of {len(changes)}; first: {first}"
        )
    return PushResult(body["accepted"], body["rejected"], sent_at, returned_at, returned_wall)


def _prices_by_product(catalog: Catalog) -> dict[object, list[Record]]:
    prices: dict[object, list[Record]] = {}
    for price in catalog.records["price"]:
        prices.setdefault(price["product"], []).append(price)
    return prices


def _scope(table: Record) -> tuple[str, ...]:
    stores = table.get("stores") or []
    if not isinstance(stores, list):
        raise ValueError(f"price table {table.get('code')} has stores {stores!r}, not a list")
    return tuple(str(store) for store in stores)
