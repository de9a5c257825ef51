"""The CloudEvents 1.0 envelope every lojasync message travels in.

Messages use the structured content mode: the AMQP body is the whole event as JSON
(`application/cloudevents+json`). Besides the required CloudEvents attributes, lojasync
sets the extension attributes `entity`, `recordkey`, `revision`, `baserevision`,
`origin`, `correlationid` and `causationid` (CloudEvents extension names are lower-case
alphanumerics only).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lojasync.errors import EnvelopeInvalid
from lojasync.ids import new_id

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json"

RECORD_CHANGED = "lojasync.record.changed.v1"
RECORD_RESOLVED = "lojasync.record.resolved.v1"
RECORD_REJECTED = "lojasync.record.rejected.v1"
STORE_ANNOUNCED = "lojasync.store.announced.v1"
# Many resolved records for one store in one message; see lojasync.batch.
RECORD_BATCH = "lojasync.record.batch.v1"

EVENT_TYPES = (RECORD_CHANGED, RECORD_RESOLVED, RECORD_REJECTED, STORE_ANNOUNCED, RECORD_BATCH)

ERP_ORIGIN = "erp"


def store_origin(store_id: str) -> str:
    return f"store:{store_id}"


def origin_store_id(origin: str) -> str | None:
    """Return the store id of a `store:<id>` origin, or None for the ERP."""
    if origin.startswith("store:"):
        return origin.removeprefix("store:")
    return None


class Envelope(BaseModel):
    """One CloudEvent with lojasync's extension attributes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=new_id, min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    subject: str | None = None
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    datacontenttype: Literal["application/json"] = "application/json"
    entity: str | None = None
    recordkey: str | None = None
    revision: int | None = Field(default=None, ge=1)
    baserevision: int | None = Field(default=None, ge=0)
    origin: str | None = None
    correlationid: str | None = None
    causationid: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> Envelope:
        """Parse a message body, raising EnvelopeInvalid with the reason."""
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeInvalid(f"message body is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise EnvelopeInvalid("message body is not a JSON object")
        return cls.from_object(raw)

    @classmethod
    def from_object(cls, raw: dict[str, Any]) -> Envelope:
        """Validate a parsed JSON object, raising EnvelopeInvalid with the reason."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise EnvelopeInvalid(f"message is not a valid CloudEvent: {problems}") from exc


_ATTRIBUTE_NAMES = frozenset(Envelope.model_fields)
# In the model's order, which is the order to_bytes writes; specversion comes first.
_AFTER_SPECVERSION = tuple(name for name in Envelope.model_fields if name != "specversion")


def serialize_event(**attributes: Any) -> bytes:
    """Return the body `Envelope(**attributes).to_bytes()` would, without building the model.

    For events a service builds in bulk from values it produced itself, such as the
    orchestrator's decisions: constructing and dumping the pydantic model costs about
    twice as much. The attributes are not validated, so the caller passes what
    Envelope accepts; a name Envelope does not have raises TypeError. Each value must be
    one orjson writes (JSON types and datetimes).
    """
    if not _ATTRIBUTE_NAMES.issuperset(attributes):
        unknown = sorted(attributes.keys() - _ATTRIBUTE_NAMES)
        raise TypeError(f"Envelope has no attribute {unknown[0]!r}")
    defaults: dict[str, Any] = {
        "id": new_id() if attributes.get("id") is None else None,
        "time": datetime.now(UTC) if attributes.get("time") is None else None,
        "datacontenttype": "application/json",
        "data": {},
    }
    event: dict[str, Any] = {"specversion": SPEC_VERSION}
    for name in _AFTER_SPECVERSION:
        value = attributes.get(name)
        if value is None:
            value = defaults.get(name)
        if value is not None:
            event[name] = value
    return orjson.dumps(event, option=orjson.OPT_UTC_Z)


# Routing keys on the topic exchange. The first word is the event kind, the second the
# entity, the rest the target: `all` (every store), `store.<id>` (one store) or `erp`.
# Subscribers bind patterns such as `resolved.product.#` or `resolved.*.store.loja-1`.


def changed_key(entity: str, origin: str) -> str:
    return f"changed.{entity}.{origin.replace(':', '.')}"


def resolved_key(entity: str, target: str) -> str:
    return f"resolved.{entity}.{target}"


def rejected_key(entity: str, target: str) -> str:
    return f"rejected.{entity}.{target}"


def store_target(store_id: str) -> str:
    return f"store.{store_id}"


ALL_STORES_TARGET = "all"
ERP_TARGET = "erp"
