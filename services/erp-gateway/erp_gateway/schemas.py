"""Request and response bodies of the gateway's HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from erp_gateway.domain import UPSERT, PushedChange


class PushItem(BaseModel):
    """One change in a push. The domain checks entity and action per item."""

    model_config = ConfigDict(extra="forbid")

    entity: str = Field(description="catalog entity, e.g. product")
    action: str = Field(default=UPSERT, description='"upsert" (default) or "delete"')
    record: dict[str, Any] | None = Field(
        default=None, description="the full record (upsert); store-local fields are rejected"
    )
    key: str | None = Field(default=None, description="record key of the record to delete")
    change_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="the ERP's own id of this change; a change id already pushed is "
        "reported as a duplicate and not sent again",
    )
    base_revision: int | None = Field(
        default=None,
        ge=0,
        description="revision the change starts from; an upsert without it (or with 0) "
        "creates the record",
    )

    def to_domain(self) -> PushedChange:
        return PushedChange(
            entity=self.entity,
            action=self.action,
            record=self.record,
            key=self.key,
            change_id=self.change_id,
            base_revision=self.base_revision,
        )


class PushRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: list[PushItem]


class PushItemResult(BaseModel):
    index: int = Field(description="position of the item in the request's records list")
    status: Literal["accepted", "rejected", "duplicate"]
    entity: str
    record_key: str | None
    event_id: str | None = Field(
        description="id of the record.changed event; for a duplicate, the event of the "
        "first push of its change id"
    )
    errors: list[dict[str, Any]] | None = Field(
        default=None,
        description="rejected items only: field errors, or one ownership-policy violation",
    )


class PushResponse(BaseModel):
    accepted: int
    rejected: int
    duplicates: int
    results: list[PushItemResult]


class DeliveryView(BaseModel):
    event_id: str
    sequence: int
    entity: str
    record_key: str
    revision: int
    origin: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    payload: dict[str, Any]


class DeliveryList(BaseModel):
    items: list[DeliveryView]
    next_after: int | None = Field(
        description="pass as `after` to read the next page; null on the last page"
    )


class RejectionView(BaseModel):
    event_id: str
    sequence: int
    change_id: str | None = Field(description="the ERP's change id of the rejected change")
    causation_id: str | None = Field(description="id of the rejected record.changed event")
    entity: str
    record_key: str
    revision: int | None = Field(description="current central revision; null if none")
    code: str
    message: str
    message_pt_br: str
    field: str | None
    errors: list[dict[str, Any]]
    current: dict[str, Any] | None = Field(description="the record as it is centrally")
    deleted: bool
    received_at: datetime


class RejectionList(BaseModel):
    items: list[RejectionView]
    next_after: int | None


class ReadyView(BaseModel):
    ready: bool
    database: bool
    broker: bool
    erp_callback: Literal["configured", "not_configured"]
    deliveries: dict[str, int] | None = Field(
        description="deliveries per status; null when the database is unreachable"
    )
    message: str
    message_pt_br: str
