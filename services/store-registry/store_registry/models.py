"""Tables of a store's database: its copy of the cadastros, one row per record."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Integer, Table, Text
from sqlmodel import Field, SQLModel

from lojasync.persistence import UtcDateTime, byte_ordered_text, json_document, utc_now


class StoreRecord(SQLModel, table=True):
    """One cadastro in this store: the confirmed shared fields, the store-local fields
    and the local edit that waits for the orchestrator's decision."""

    __tablename__ = "store_record"
    # The primary key (entity, record_key) also serves every query by entity alone, so
    # the table has no other index to update on each write.

    entity: str = Field(sa_column=Column(Text, primary_key=True))
    # Keys compare by bytes, so keyset pagination and the entity digest
    # (which sorts with COLLATE "C") see the same order, whatever the database locale.
    record_key: str = Field(sa_column=Column(byte_ordered_text(), primary_key=True))
    # Last revision the orchestrator resolved; 0 while the record was never confirmed.
    revision: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    # Confirmed shared fields; NULL for a tombstone or a create not yet confirmed.
    data: dict[str, Any] | None = Field(
        default=None, sa_column=Column(json_document(none_as_null=True))
    )
    # lojasync.digest.content_hash of `data`; NULL when `data` is NULL.
    content_hash: str | None = Field(default=None, sa_column=Column(Text))
    deleted: bool = False
    # Fields the policy marks store_local; they never leave the store.
    local: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(json_document(none_as_null=True), nullable=False, server_default="{}"),
    )
    # Shared fields edited here and not yet confirmed (a create keeps the whole record here).
    pending: dict[str, Any] | None = Field(
        default=None, sa_column=Column(json_document(none_as_null=True))
    )
    pending_action: str | None = Field(default=None, sa_column=Column(Text))  # upsert | delete
    pending_event_id: str | None = Field(default=None, sa_column=Column(Text))
    pending_since: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))
    # The orchestrator's reason for rejecting the last local edit, with its time.
    last_rejection: dict[str, Any] | None = Field(
        default=None, sa_column=Column(json_document(none_as_null=True))
    )
    updated_at: datetime = Field(
        default_factory=utc_now, sa_column=Column(UtcDateTime(), nullable=False)
    )


STORE_RECORD: Table = StoreRecord.__table__  # type: ignore[attr-defined]
TABLES = (STORE_RECORD,)
