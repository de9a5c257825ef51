"""The ownership policy: who may change each cadastro, where it goes, how conflicts end.

The policy is data (`policy.yaml` beside this module, or the file named by
LOJASYNC_POLICY_FILE). The store registry checks a local edit against it before
accepting it, and the orchestrator checks every change again before deciding it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lojasync.errors import ConfigurationError, LojasyncError
from lojasync.i18n import entity_name_pt_br

BUNDLED_POLICY = Path(__file__).with_name("policy.yaml")
POLICY_FILE_VARIABLE = "LOJASYNC_POLICY_FILE"


class Action(StrEnum):
    CREATE = "create"
    EDIT = "edit"
    DELETE = "delete"


class Owner(StrEnum):
    ERP = "erp"
    SHARED = "shared"
    STORE = "store"


class Conflict(StrEnum):
    ERP_WINS = "erp-wins"
    FIELD_MERGE = "field-merge"
    REJECT_STALE = "reject-stale"
    NEWEST_WINS = "newest-wins"


class ScopeFrom(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: str
    field: str


class ScopeFieldDistribution(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scope_field: str


class ScopeFromDistribution(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scope_from: ScopeFrom


Distribution = Literal["all", "origin"] | ScopeFieldDistribution | ScopeFromDistribution


class EntityPolicy(BaseModel):
    """The rules for one entity, as written in the policy file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: str = ""
    owner: Owner
    erp: frozenset[Action]
    stores: frozenset[Action]
    distribution: Distribution
    conflict: Conflict
    store_local: frozenset[str] = frozenset()
    immutable_after_accept: frozenset[str] = frozenset()

    @model_validator(mode="after")
    def _check_owner_matches_permissions(self) -> EntityPolicy:
        if self.owner is Owner.ERP and self.stores:
            raise ValueError("an ERP-owned entity cannot grant actions to stores (stores: [])")
        if self.owner is Owner.STORE and Action.CREATE not in self.stores:
            raise ValueError("a store-owned entity must let stores create it")
        return self

    def store_may(self, action: Action) -> bool:
        return action in self.stores

    def erp_may(self, action: Action) -> bool:
        return action in self.erp


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Annotated[int, Field(ge=1, le=1)]
    entities: dict[str, EntityPolicy]


@dataclass(frozen=True)
class Policy:
    entities: Mapping[str, EntityPolicy]
    source: str

    def for_entity(self, entity: str) -> EntityPolicy:
        try:
            return self.entities[entity]
        except KeyError:
            known = ", ".join(sorted(self.entities))
            raise ConfigurationError(
                f"entity {entity!r} has no rules in the policy {self.source}; "
                f"add it there (entities with rules: {known})"
            ) from None

    def split_store_local(
        self, entity: str, fields: Mapping[str, object]
    ) -> tuple[dict[str, object], dict[str, object]]:
        """Split fields into (shared fields, store-local fields) for one entity."""
        local_names = self.for_entity(entity).store_local
        shared = {name: value for name, value in fields.items() if name not in local_names}
        local = {name: value for name, value in fields.items() if name in local_names}
        return shared, local

    def dependency_order(self, entities: Iterable[str]) -> list[str]:
        """Order entities so that each comes after the ones its scope depends on."""
        pending = list(entities)
        ordered: list[str] = []
        while pending:
            entity = pending.pop(0)
            distribution = self.for_entity(entity).distribution
            if isinstance(distribution, ScopeFromDistribution):
                parent = distribution.scope_from.entity
                if parent in pending:
                    pending.append(entity)
                    continue
            ordered.append(entity)
        return ordered


def parse_policy(text: str, source: str) -> Policy:
    try:
        raw = yaml.safe_load(text)
        parsed = PolicyFile.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"policy file {source} is not valid YAML: {exc}") from exc
    except ValidationError as exc:
        raise ConfigurationError(f"policy file {source} is invalid: {exc}") from exc

    entities = {
        name: rules.model_copy(update={"entity": name}) for name, rules in parsed.entities.items()
    }
    for name, rules in entities.items():
        distribution = rules.distribution
        if isinstance(distribution, ScopeFromDistribution):
            parent = distribution.scope_from.entity
            if parent not in entities:
                raise ConfigurationError(
                    f"policy file {source}: {name} takes its scope from {parent!r}, "
                    "which has no rules; add that entity"
                )
    return Policy(entities=entities, source=source)


@cache
def _load_policy_file(path: Path) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read policy file {path}: {exc.strerror}") from exc
    return parse_policy(text, str(path))


def load_policy(path: Path | None = None) -> Policy:
    """Load the policy from `path`, LOJASYNC_POLICY_FILE, or the bundled file, in that order."""
    if path is None:
        configured = os.environ.get(POLICY_FILE_VARIABLE)
        path = Path(configured) if configured else BUNDLED_POLICY
    return _load_policy_file(path.resolve())


class PolicyViolation(LojasyncError):
    """The ownership policy rejects a change; `code` is stable for machines."""

    def __init__(
        self,
        code: str,
        message: str,
        message_pt_br: str,
        *,
        entity: str,
        record_key: str,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.message_pt_br = message_pt_br
        self.entity = entity
        self.record_key = record_key
        self.field = field

    def as_dict(self) -> dict[str, object]:
        detail: dict[str, object] = {
            "code": self.code,
            "message": self.message,
            "message_pt_br": self.message_pt_br,
            "entity": self.entity,
            "record_key": self.record_key,
        }
        if self.field is not None:
            detail["field"] = self.field
        return detail


def check_store_change(
    rules: EntityPolicy,
    *,
    store_id: str,
    record_key: str,
    action: Action,
    changed_fields: Iterable[str],
    current: Mapping[str, object] | None,
    accepted: bool,
    owner_store: str | None,
) -> None:
    """Raise PolicyViolation unless a store may make this change.

    `changed_fields` are the fields whose value differs from `current` (store-local
    fields included); `accepted` tells whether the orchestrator has resolved the record
    at least once; `owner_store` is the store that created a store-owned record.
    """
    entity = rules.entity
    shared_fields = sorted(set(changed_fields) - rules.store_local)

    if rules.owner is Owner.ERP:
        if action is Action.EDIT and not shared_fields:
            return
        raise PolicyViolation(
            "erp_owned",
            f"{entity} {record_key} is owned by the ERP and read-only in stores; "
            f"change it in the ERP"
            + (
                f" (store-local fields you may edit here: {', '.join(sorted(rules.store_local))})"
                if rules.store_local
                else ""
            ),
            f"{entity_name_pt_br(entity)} {record_key} pertence ao ERP e é somente leitura "
            "na loja; "
            f"altere-o no ERP"
            + (
                f" (campos locais que a loja pode editar: {', '.join(sorted(rules.store_local))})"
                if rules.store_local
                else ""
            ),
            entity=entity,
            record_key=record_key,
            field=shared_fields[0] if shared_fields else None,
        )

    if not rules.store_may(action):
        raise PolicyViolation(
            "action_not_allowed",
            f"stores may not {action.value} {entity} records; do it in the ERP",
            f"a loja não pode {_ACTION_PT[action]} registros de {entity_name_pt_br(entity)}; "
            "faça isso no ERP",
            entity=entity,
            record_key=record_key,
        )

    if rules.owner is Owner.STORE and owner_store is not None and owner_store != store_id:
        raise PolicyViolation(
            "not_owner_store",
            f"{entity} {record_key} belongs to store {owner_store}; only that store may change it",
            f"{entity_name_pt_br(entity)} {record_key} pertence à loja {owner_store}; "
            "só essa loja pode alterá-lo",
            entity=entity,
            record_key=record_key,
        )

    if accepted and current is not None:
        check_immutable_fields(rules, record_key=record_key, changed_fields=changed_fields)


def check_immutable_fields(
    rules: EntityPolicy, *, record_key: str, changed_fields: Iterable[str]
) -> None:
    frozen = sorted(set(changed_fields) & rules.immutable_after_accept)
    if not frozen:
        return
    field = frozen[0]
    raise PolicyViolation(
        "immutable_field",
        f"{rules.entity} {record_key}: field {field!r} cannot change after the orchestrator "
        f"accepted the record; register a new {rules.entity} instead",
        f"{entity_name_pt_br(rules.entity)} {record_key}: o campo {field!r} não pode mudar "
        f"depois que o orquestrador aceitou o registro; cadastre um novo "
        f"{entity_name_pt_br(rules.entity)}",
        entity=rules.entity,
        record_key=record_key,
        field=field,
    )


def check_erp_change(rules: EntityPolicy, *, record_key: str, action: Action) -> None:
    if rules.erp_may(action):
        return
    raise PolicyViolation(
        "action_not_allowed",
        f"the ERP may not {action.value} {rules.entity} records; the owner store does that",
        f"o ERP não pode {_ACTION_PT[action]} registros de {entity_name_pt_br(rules.entity)}; "
        "a loja dona faz isso",
        entity=rules.entity,
        record_key=record_key,
    )


_ACTION_PT = {Action.CREATE: "criar", Action.EDIT: "alterar", Action.DELETE: "excluir"}
