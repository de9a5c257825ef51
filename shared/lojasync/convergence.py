"""Compare the records of each store with the records the orchestrator expects it to have."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class EntityComparison:
    entity: str
    expected_count: int
    expected_digest: str
    count: int | None
    digest: str | None
    pending: int

    @property
    def matches(self) -> bool:
        return self.count == self.expected_count and self.digest == self.expected_digest

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "digest": self.digest,
            "expected_count": self.expected_count,
            "expected_digest": self.expected_digest,
            "pending": self.pending,
            "matches": self.matches,
        }


@dataclass(frozen=True)
class StoreComparison:
    store_id: str
    api_url: str
    reachable: bool
    error: str | None
    entities: list[EntityComparison]

    @property
    def matches(self) -> bool:
        return self.reachable and all(entity.matches for entity in self.entities)

    def as_dict(self) -> dict[str, Any]:
        return {
            "api_url": self.api_url,
            "reachable": self.reachable,
            "error": self.error,
            "matches": self.matches,
            "entities": {entity.entity: entity.as_dict() for entity in self.entities},
        }


@dataclass(frozen=True)
class ConvergenceReport:
    orchestrator: dict[str, dict[str, Any]]
    stores: list[StoreComparison]

    @property
    def converged(self) -> bool:
        """True when at least one store announced itself and every store matches."""
        return bool(self.stores) and all(store.matches for store in self.stores)

    def as_dict(self) -> dict[str, Any]:
        return {
            "converged": self.converged,
            "orchestrator": {"entities": self.orchestrator},
            "stores": {store.store_id: store.as_dict() for store in self.stores},
        }


async def compare_stores(
    orchestrator_url: str, *, client: httpx.AsyncClient | None = None, timeout: float = 30.0
) -> ConvergenceReport:
    """Fetch the orchestrator's expected digests and each known store's actual ones."""
    own_client = client is None
    client = client or httpx.AsyncClient(timeout=timeout)
    try:
        response = await client.get(f"{orchestrator_url.rstrip('/')}/v1/status")
        response.raise_for_status()
        status = response.json()
        stores = [
            await _compare_store(client, store_id, expected)
            for store_id, expected in sorted(status["stores"].items())
        ]
        return ConvergenceReport(orchestrator=status["entities"], stores=stores)
    finally:
        if own_client:
            await client.aclose()


async def _compare_store(
    client: httpx.AsyncClient, store_id: str, expected: dict[str, Any]
) -> StoreComparison:
    api_url = expected["api_url"]
    actual: dict[str, Any] = {}
    error = None
    try:
        response = await client.get(f"{api_url.rstrip('/')}/v1/status")
        response.raise_for_status()
        actual = response.json()["entities"]
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"

    entities = []
    for entity, summary in sorted(expected["entities"].items()):
        held = actual.get(entity, {})
        entities.append(
            EntityComparison(
                entity=entity,
                expected_count=summary["count"],
                expected_digest=summary["digest"],
                count=held.get("count"),
                digest=held.get("digest"),
                pending=held.get("pending", 0),
            )
        )
    return StoreComparison(store_id, api_url, error is None, error, entities)
