"""Tables of the gateway's database: ERP change ids, deliveries to the ERP, rejections."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Column, Identity, Index, Integer, Table, Text, text
from sqlmodel import Field, SQLModel

from lojasync.persistence import (
    UtcDateTime,
    json_document,
    utc_now,
)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class ErpChange(SQLModel, table=True):
    """The ERP's change ids already turned into events; a repeated id is a duplicate."""

    __tablename__ = "erp_change"
    __table_args__ = (Index("ix_erp_change_event_id", "event_id"),)

    change_id: str = Field(sa_column=Column(Text, primary_key=True))
    event_id: str = Field(sa_column=Column(Text, nullable=False))
    entity: str = Field(sa_column=Column(Text, nullable=False))
    record_key: str = Field(sa_column=Column(Text, nullable=False))
    received_at: datetime = Field(
        default_factory=utc_now, sa_column=Column(UtcDateTime(), nullable=False)
    )


class ErpDelivery(SQLModel, table=True):
    """A resolved store change to POST to the ERP, with the state of its attempts."""

    __tablename__ = "erp_delivery"
    __table_args__ = (
        Index(
            "ix_erp_delivery_pending_record",
            "entity",
            "record_key",
            "revision",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_erp_delivery_status_sequence", "status", "sequence"),
    )

    event_id: str = Field(sa_column=Column(Text, primary_key=True))
    # Order of creation; deliveries go out in this order (per record, in revision order).
    sequence: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(), nullable=False, unique=True)
    )
    entity: str = Field(sa_column=Column(Text, nullable=False))
    record_key: str = Field(sa_column=Column(Text, nullable=False))
    revision: int = Field(sa_column=Column(Integer, nullable=False))
    origin: str = Field(sa_column=Column(Text, nullable=False))
    payload: dict[str, Any] = Field(sa_column=Column(json_document(), nullable=False))
    status: str = Field(
        default=DeliveryStatus.PENDING.value, sa_column=Column(Text, nullable=False)
    )
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    next_attempt_at: datetime = Field(
        default_factory=utc_now, sa_column=Column(UtcDateTime(), nullable=False)
    )
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    delivered_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))
    created_at: datetime = Field(
        default_factory=utc_now, sa_column=Column(UtcDateTime(), nullable=False)
    )


class ErpRejection(SQLModel, table=True):
    """A change the ERP pushed that the orchestrator rejected, as the ERP can read it."""

    __tablename__ = "erp_rejection"

    event_id: str = Field(sa_column=Column(Text, primary_key=True))
    sequence: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(), nullable=False, unique=True)
    )
    # Id of the rejected record.changed event; erp_change maps it back to the change_id.
    causation_id: str | None = Field(default=None, sa_column=Column(Text))
    correlation_id: str | None = Field(default=None, sa_column=Column(Text))
    entity: str = Field(sa_column=Column(Text, nullable=False))
    record_key: str = Field(sa_column=Column(Text, nullable=False))
    revision: int | None = Field(default=None, sa_column=Column(Integer))
    code: str = Field(sa_column=Column(Text, nullable=False))
    message: str = Field(sa_column=Column(Text, nullable=False))
    message_pt_br: str = Field(sa_column=Column(Text, nullable=False))
    field: str | None = Field(default=None, sa_column=Column(Text))
    errors: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(json_document(), nullable=False)
    )
    current: dict[str, Any] | None = Field(default=None, sa_column=Column(json_document()))
    deleted: bool = False
    received_at: datetime = Field(
        default_factory=utc_now, sa_column=Column(UtcDateTime(), nullable=False)
    )


ERP_CHANGE: Table = ErpChange.__table__  # type: ignore[attr-defined]
ERP_DELIVERY: Table = ErpDelivery.__table__  # type: ignore[attr-defined]
ERP_REJECTION: Table = ErpRejection.__table__  # type: ignore[attr-defined]
TABLES = (ERP_CHANGE, ERP_DELIVERY, ERP_REJECTION)
