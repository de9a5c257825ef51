"""The AsyncAPI document matches the events the code builds."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from lojasync.envelope import (
    EVENT_TYPES,
    RECORD_CHANGED,
    RECORD_REJECTED,
    RECORD_RESOLVED,
    STORE_ANNOUNCED,
    Envelope,
    changed_key,
    rejected_key,
    resolved_key,
    store_target,
)

DOCUMENT = yaml.safe_load((Path(__file__).parents[2] / "docs" / "asyncapi.yaml").read_text())


def address_pattern(channel: str) -> re.Pattern[str]:
    address = DOCUMENT["channels"][channel]["address"]
    return re.compile(
        "^"
        + re.sub(
            r"\{[^}]+\}",
            r"[a-z0-9_-]+(\\.[a-z0-9_-]+)?",
            re.escape(address).replace(r"\{", "{").replace(r"\}", "}"),
        )
        + "$"
    )


def validate(message: str, event: Envelope) -> None:
    schema: dict[str, Any] = {**DOCUMENT, "$ref": f"#/components/messages/{message}/payload"}
    jsonschema.validate(event.model_dump(mode="json", exclude_none=True), schema)


def test_every_event_type_documented() -> None:
    names = {message["name"] for message in DOCUMENT["components"]["messages"].values()}

    assert names == set(EVENT_TYPES)


def test_envelope_attributes_documented() -> None:
    documented = set(DOCUMENT["components"]["schemas"]["envelope"]["properties"]) | {"data"}

    assert documented == set(Envelope.model_fields)


@pytest.mark.parametrize(
    ("channel", "routing_key"),
    [
        ("changed", changed_key("product", "erp")),
        ("changed", changed_key("customer", "store:loja-1")),
        ("resolved", resolved_key("price", store_target("loja-3"))),
        ("resolved", resolved_key("product", "all")),
        ("resolved", resolved_key("customer", "erp")),
        ("rejected", rejected_key("product", store_target("loja-2"))),
        ("announced", "announced.store.loja-1"),
    ],
)
def test_routing_keys_match_addresses(channel: str, routing_key: str) -> None:
    assert address_pattern(channel).match(routing_key), routing_key


def test_changed_event_matches_schema() -> None:
    event = Envelope(
        source="lojasync/erp-gateway",
        type=RECORD_CHANGED,
        entity="product",
        recordkey="P1",
        origin="erp",
        data={"action": "upsert", "fields": {"code": "P1"}},
    )

    validate("recordChanged", event)


def test_resolved_event_matches_schema() -> None:
    event = Envelope(
        source="lojasync/sync-orchestrator",
        type=RECORD_RESOLVED,
        entity="product",
        recordkey="P1",
        revision=3,
        origin="erp",
        causationid="c1",
        data={"deleted": False, "record": {"code": "P1"}, "stores": None, "out_of_scope": False},
    )

    validate("recordResolved", event)


def test_rejected_event_matches_schema() -> None:
    event = Envelope(
        source="lojasync/sync-orchestrator",
        type=RECORD_REJECTED,
        entity="product",
        recordkey="P1",
        origin="store:loja-1",
        causationid="c1",
        data={
            "code": "erp_owned",
            "message": "m",
            "message_pt_br": "m",
            "field": "description",
            "errors": [],
            "current": None,
            "deleted": False,
        },
    )

    validate("recordRejected", event)


def test_schema_rejects_resolved_without_revision() -> None:
    event = Envelope(
        source="lojasync/sync-orchestrator",
        type=RECORD_RESOLVED,
        entity="product",
        recordkey="P1",
        origin="erp",
        causationid="c1",
        data={"deleted": False, "record": {}, "stores": None, "out_of_scope": False},
    )

    with pytest.raises(jsonschema.ValidationError):
        validate("recordResolved", event)


def test_announced_event_matches_schema() -> None:
    event = Envelope(
        source="lojasync/store-registry/loja-1",
        type=STORE_ANNOUNCED,
        data={"store_id": "loja-1", "api_url": "http://127.0.0.1:8101"},
    )

    validate("storeAnnounced", event)
