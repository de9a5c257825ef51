"""Tables of the orchestrator's database: current state, event log, known stores."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, Integer, Table
from sqlmodel import Field, SQLModel

from lojasync.persistence import (
    TextList,
    UtcDateTime,
    byte_ordered_text,
    json_document,
    serial_id,
    utc_now,
)


class RecordState(SQLModel, table=True):
    """The current, authoritative state of every record, one row per record."""

    __tablename__ = "record_state"

    entity: str = Field(primary_key=True)
    record_key: str = Field(primary_key=True)
    revision: int = Field(sa_column=Column(Integer, nullable=False))
    data: dict[str, Any] | None = Field(default=None, sa_column=Column(json_document()))
    content_hash: str | None = None
    deleted: bool = False
    # Store ids that receive the record; NULL means every store.
    stores: list[str] | None = Field(default=None, sa_column=Column(TextList()))
    owner_store: str | None = None
    # Origin ("erp" or "store:<id>") of the last change of each field, for field-merge.
    field_origins: dict[str, str] = Field(default_factory=dict, sa_column=Column(json_document()))
    # The record as the ERP last saw it, to tell which fields a full ERP push changed.
    erp_base: dict[str, Any] | None = Field(default=None, sa_column=Column(json_document()))
    origin: str
    updated_at: datetime = Field(
        default_factory=utc_now, sa_column=Column(UtcDateTime(), nullable=False)
    )


class EventLog(SQLModel, table=True):
    """Every decision in order: resolved revisions and rejections."""

    __tablename__ = "event_log"
    __table_args__ = (Index("ix_event_log_record", "entity", "record_key", "revision"),)

    seq: int | None = Field(default=None, sa_column=Column(serial_id(), primary_key=True))
    # Both indexed columns are compared by bytes, which costs PostgreSQL less than the
    # database collation's strcoll; they are only looked up by equality.
    event_id: str = Field(sa_column=Column(byte_ordered_text(), nullable=False, unique=True))
    kind: str  # "resolved" or "rejected"
    entity: str
    record_key: str = Field(sa_column=Column(byte_ordered_text(), nullable=False))
    revision: int | None = None
    origin: str
    causation_id: str
    correlation_id: str | None = None
    deleted: bool = False
    data: dict[str, Any] | None = Field(default=None, sa_column=Column(json_document()))
    stores: list[str] | None = Field(default=None, sa_column=Column(TextList()))
    reason: dict[str, Any] | None = Field(default=None, sa_column=Column(json_document()))
    recorded_at: datetime = Field(
        default_factory=utc_now, sa_column=Column(UtcDateTime(), nullable=False)
    )


class KnownStore(SQLModel, table=True):
    """Stores that announced themselves, with the URL of their API."""

    __tablename__ = "known_store"

    store_id: str = Field(primary_key=True)
    api_url: str
    last_seen: datetime = Field(
        default_factory=utc_now, sa_column=Column(UtcDateTime(), nullable=False)
    )


RECORD_STATE: Table = RecordState.__table__  # type: ignore[attr-defined]
EVENT_LOG: Table = EventLog.__table__  # type: ignore[attr-defined]
KNOWN_STORE: Table = KnownStore.__table__  # type: ignore[attr-defined]
TABLES = (RECORD_STATE, EVENT_LOG, KNOWN_STORE)
