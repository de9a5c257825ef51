"""Rules of the gateway: accept or reject each record the ERP pushes, and classify the
ERP's responses to deliveries.

Pure: no I/O. The checks run in this order, and the first failing step ends them:
entity known, action valid, key or record present, ownership policy. Then the record's
store-local fields and every catalog rule are checked together, so one rejection lists
all the field errors of the record.

The gateway cannot see whether a record already exists centrally, so it reads an upsert
as an edit only when the ERP names the revision it edits (`base_revision` of 1 or more)
and as a create otherwise. The orchestrator checks the policy again with the real state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal

from lojasync.catalog import ENTITIES, RecordInvalid, record_key, validate_keyed_record
from lojasync.envelope import ERP_ORIGIN, RECORD_CHANGED, Envelope
from lojasync.policy import Action, Policy, PolicyViolation, check_erp_change
from lojasync.reference import ReferenceTables
from lojasync.validation import field_error

SOURCE = "lojasync/erp-gateway"

ChangeAction = Literal["upsert", "delete"]
UPSERT: Final = "upsert"
DELETE: Final = "delete"
ACTIONS: tuple[ChangeAction, ...] = (UPSERT, DELETE)


@dataclass(frozen=True)
class PushedChange:
    """One item of a push, as the ERP sent it."""

    entity: str
    action: str = UPSERT
    record: Mapping[str, object] | None = None
    key: str | None = None
    change_id: str | None = None
    base_revision: int | None = None


@dataclass(frozen=True)
class AcceptedChange:
    """A pushed item that passed every check, ready to become a `record.changed` event."""

    entity: str
    record_key: str
    action: ChangeAction
    fields: dict[str, object]
    """The validated, normalized record without store-local fields; empty for a delete."""
    change_id: str | None = None
    base_revision: int | None = None

    def event_attributes(self) -> dict[str, Any]:
        """Return the attributes of the `record.changed` event, without its id.

        The ERP's change_id is the event's correlation id.
        """
        return {
            "source": SOURCE,
            "type": RECORD_CHANGED,
            "subject": f"{self.entity}/{self.record_key}",
            "entity": self.entity,
            "recordkey": self.record_key,
            "origin": ERP_ORIGIN,
            "baserevision": self.base_revision,
            "correlationid": self.change_id,
            "data": {"action": self.action, "fields": self.fields},
        }

    def to_envelope(self) -> Envelope:
        """Build the `record.changed` event."""
        return Envelope(**self.event_attributes())


@dataclass(frozen=True)
class RejectedChange:
    """A pushed item that failed; `errors` contains FieldError dicts or one policy violation."""

    entity: str
    record_key: str | None
    errors: list[dict[str, object]] = field(default_factory=list)


Decision = AcceptedChange | RejectedChange


def decide_change(item: PushedChange, policy: Policy, tables: ReferenceTables) -> Decision:
    """Check one pushed item against the catalog and the ownership policy."""
    if item.entity not in ENTITIES or item.entity not in policy.entities:
        return _reject(item, None, [_unknown_entity(item.entity, policy)])

    if item.action not in ACTIONS:
        return _reject(item, None, [_unknown_action(item.action)])

    if item.action == DELETE:
        return _decide_delete(item, policy)
    return _decide_upsert(item, policy, tables)


def _decide_delete(item: PushedChange, policy: Policy) -> Decision:
    key = item.key.strip() if item.key is not None else ""
    if not key:
        return _reject(item, None, [_key_required(item.key)])

    violation = _policy_violation(item, policy, Action.DELETE, key)
    if violation is not None:
        return _reject(item, key, [violation])

    # NOTE: a delete's key is used as sent. The ERP must send the normalized key (as the
    # push results and the resolved events show it), e.g. a lower-case UUID.
    return AcceptedChange(
        entity=item.entity,
        record_key=key,
        action=DELETE,
        fields={},
        change_id=item.change_id,
        base_revision=item.base_revision,
    )


def _decide_upsert(item: PushedChange, policy: Policy, tables: ReferenceTables) -> Decision:
    if item.record is None:
        return _reject(item, _sent_key(item), [_record_required()])

    edits = item.base_revision is not None and item.base_revision >= 1
    action = Action.EDIT if edits else Action.CREATE
    violation = _policy_violation(item, policy, action)
    if violation is not None:
        return _reject(item, _key_or_none(item), [violation])

    shared, local = policy.split_store_local(item.entity, item.record)
    errors = [_store_local_field(name, value) for name, value in local.items()]
    try:
        normalized, key = validate_keyed_record(item.entity, shared, tables)
    except RecordInvalid as invalid:
        errors.extend(error.as_dict() for error in invalid.errors)
        return _reject(item, invalid.record_key or _key_or_none(item), errors)

    if errors:
        return _reject(item, key, errors)
    if item.key is not None and item.key.strip() != key:
        return _reject(item, key, [_key_mismatch(item.key, key)])

    # A catalog model may fill an absent store-local field with its default; drop it so
    # the event carries shared fields only.
    fields, _ = policy.split_store_local(item.entity, normalized)
    return AcceptedChange(
        entity=item.entity,
        record_key=key,
        action=UPSERT,
        fields=fields,
        change_id=item.change_id,
        base_revision=item.base_revision,
    )


def _policy_violation(
    item: PushedChange, policy: Policy, action: Action, key: str | None = None
) -> dict[str, object] | None:
    """Return the policy violation as a dict, or None when the ERP may take `action`."""
    rules = policy.for_entity(item.entity)
    if rules.erp_may(action):
        return None
    # The key only goes into the message, so it is computed on this rare path alone.
    key = key or _key_or_none(item) or "(no key)"
    try:
        check_erp_change(rules, record_key=key, action=action)
    except PolicyViolation as violation:
        detail = violation.as_dict()
        if action is Action.CREATE and rules.erp_may(Action.EDIT):
            detail["message"] = (
                f"{violation.message}. An upsert without base_revision creates a record; "
                "to edit an existing one, send the base_revision it starts from."
            )
            detail["message_pt_br"] = (
                f"{violation.message_pt_br}. Um upsert sem base_revision cria um registro; "
                "para alterar um existente, envie a base_revision de onde a alteração parte."
            )
        return detail
    return None


def _reject(item: PushedChange, key: str | None, errors: list[dict[str, object]]) -> RejectedChange:
    return RejectedChange(entity=item.entity, record_key=key, errors=errors)


def _sent_key(item: PushedChange) -> str | None:
    if item.key is None or not item.key.strip():
        return None
    return item.key.strip()


def _key_or_none(item: PushedChange) -> str | None:
    """Return the record key of the raw record, or the sent key, when either can be made."""
    if item.record is not None:
        try:
            return record_key(item.entity, item.record)
        except RecordInvalid:
            pass
    return _sent_key(item)


def _unknown_entity(entity: str, policy: Policy) -> dict[str, object]:
    known = ", ".join(sorted(name for name in ENTITIES if name in policy.entities))
    return field_error(
        "entity",
        entity,
        "unknown_entity",
        f"Entity {entity!r} is unknown; use one of: {known}.",
        f"A entidade {entity!r} não existe; use uma destas: {known}.",
    ).as_dict()


def _unknown_action(action: str) -> dict[str, object]:
    return field_error(
        "action",
        action,
        "unknown_action",
        f'Action {action!r} is invalid; use "upsert" or "delete".',
        f'A ação {action!r} é inválida; use "upsert" ou "delete".',
    ).as_dict()


def _key_required(key: str | None) -> dict[str, object]:
    return field_error(
        "key",
        key,
        "required",
        'A delete needs the record key in "key"; send the key of the record to delete.',
        'Uma exclusão precisa da chave do registro em "key"; envie a chave do registro a excluir.',
    ).as_dict()


def _record_required() -> dict[str, object]:
    return field_error(
        "record",
        None,
        "required",
        'An upsert needs the full record in "record".',
        'Um upsert precisa do registro completo em "record".',
    ).as_dict()


def _store_local_field(name: str, value: object) -> dict[str, object]:
    return field_error(
        name,
        value,
        "store_local_field",
        f"{name} is kept by each store; remove it.",
        f"{name} é mantido por cada loja; remova-o.",
    ).as_dict()


def _key_mismatch(sent: str, computed: str) -> dict[str, object]:
    return field_error(
        "key",
        sent,
        "key_mismatch",
        f"Key {sent!r} does not match the record, whose key is {computed!r}; send the "
        'record\'s key or leave "key" out.',
        f"A chave {sent!r} não confere com o registro, cuja chave é {computed!r}; envie a "
        'chave do registro ou omita "key".',
    ).as_dict()


class DeliveryOutcome(StrEnum):
    """The effect of the ERP's response on a delivery."""

    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


# 408 Request Timeout and 429 Too Many Requests ask the client to retry later, unlike other
# 4xx statuses.
_RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})


def delivery_outcome(status_code: int) -> DeliveryOutcome:
    """Classify the ERP's HTTP status: 2xx delivered, 5xx/408/429 retry, anything else failed.

    A redirect counts as failed because the gateway does not follow it; the callback
    URL must name the final address.
    """
    if 200 <= status_code < 300:
        return DeliveryOutcome.DELIVERED
    if status_code >= 500 or status_code in _RETRYABLE_CLIENT_ERRORS:
        return DeliveryOutcome.RETRY
    return DeliveryOutcome.FAILED
