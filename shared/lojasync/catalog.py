"""The entity catalog: every cadastro type lojasync synchronizes, its fields and its key.

Each entity has a pydantic model whose fields are checked by the functions of
`lojasync.validation`. `validate_record` turns a record as received into its normalized,
JSON-safe form, or raises RecordInvalid listing every field error at once.

Field conventions, for every entity:
- Strings are stripped of surrounding whitespace.
- An optional field accepts null or leaves the field out, and a blank string counts as
  null. Every other field is required, except the booleans that have a default.
- Fields not in the model are rejected with rule "unknown_field".
- Booleans must be JSON true or false, and lists JSON arrays.
- Money and percentages come out as strings with two decimal places ("12.90").

Validators that consult the reference tables read them from the pydantic validation
context: `Model.model_validate(data, context={"tables": tables})`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import ErrorDetails

from lojasync.errors import LojasyncError
from lojasync.i18n import entity_name_pt_br
from lojasync.reference import ReferenceTables
from lojasync.validation import (
    CFOP_INBOUND_FIRST_DIGITS,
    UF_IBGE_CODES,
    FieldError,
    FieldInvalid,
    check_cest,
    check_cest_format,
    check_cfop,
    check_cfop_known,
    check_choice,
    check_cnpj,
    check_cpf_or_cnpj,
    check_cst,
    check_email,
    check_gtin,
    check_ibge_format,
    check_ibge_municipality,
    check_money,
    check_ncm,
    check_ncm_format,
    check_pattern,
    check_payment_kind,
    check_percentage,
    check_phone,
    check_text,
    check_uf,
    check_uuid,
    field_error,
    show_value,
)

# --- Errors -------------------------------------------------------------------------------


class UnknownEntity(LojasyncError):
    """An entity name that the catalog does not define."""

    code = "unknown_entity"

    def __init__(self, name: str, valid: Iterable[str]) -> None:
        self.name = name
        self.valid = tuple(valid)
        listed = ", ".join(self.valid)
        self.message = f"unknown entity {name!r}; the catalog defines {listed}."
        self.message_pt_br = f"entidade desconhecida {name!r}; o catálogo define {listed}."
        super().__init__(self.message)

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "message_pt_br": self.message_pt_br,
            "entity": self.name,
        }


class RecordInvalid(LojasyncError):
    """A record that failed validation, with every field error in `errors`."""

    code = "record_invalid"

    def __init__(self, entity: str, record_key: str | None, errors: list[FieldError]) -> None:
        self.entity = entity
        self.record_key = record_key
        self.errors = errors
        fields = "; ".join(f"{error.field or '(record)'}: {error.rule}" for error in errors)
        count = f"{len(errors)} error" if len(errors) == 1 else f"{len(errors)} errors"
        count_pt_br = f"{len(errors)} erro" if len(errors) == 1 else f"{len(errors)} erros"
        key = record_key if record_key is not None else "(no valid key)"
        key_pt_br = record_key if record_key is not None else "(sem chave válida)"
        self.message = f"{entity} record {key} is invalid ({count}: {fields})."
        self.message_pt_br = (
            f"registro de {entity_name_pt_br(entity)} {key_pt_br} inválido "
            f"({count_pt_br}: {fields})."
        )
        super().__init__(self.message)

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "message_pt_br": self.message_pt_br,
            "entity": self.entity,
            "record_key": self.record_key,
            "errors": [error.as_dict() for error in self.errors],
        }


# --- Field types --------------------------------------------------------------------------


def _tables(info: ValidationInfo) -> ReferenceTables:
    context = info.context
    tables = context.get("tables") if isinstance(context, Mapping) else None
    if not isinstance(tables, ReferenceTables):
        raise TypeError(
            "catalog validation needs the reference tables: call "
            "Model.model_validate(data, context={'tables': tables}) or validate_record()."
        )
    return tables


def _text(max_length: int) -> BeforeValidator:
    return BeforeValidator(lambda value: check_text(value, max_length=max_length))


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap a check so that null and blank strings become None instead of reaching it."""

    def check_optional(value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return check(value)

    return check_optional


def _pattern(
    pattern: str,
    expected: str,
    expected_pt_br: str,
    *,
    rule: str = "code_format",
    upper: bool = False,
) -> Callable[[Any], str]:
    compiled = re.compile(pattern)

    def check(value: Any) -> str:
        return check_pattern(
            value,
            pattern=compiled,
            rule=rule,
            expected=expected,
            expected_pt_br=expected_pt_br,
            upper=upper,
        )

    return check


def _ncm_with_tables(value: Any, info: ValidationInfo) -> str:
    return check_ncm(value, _tables(info))


def _cfop_with_tables(value: Any, info: ValidationInfo) -> str:
    return check_cfop_known(value, _tables(info))


def _municipality_with_tables(value: Any, info: ValidationInfo) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return check_ibge_municipality(value, _tables(info))


def _money_at_least_one_cent(value: Any) -> Decimal:
    return check_money(value, minimum=Decimal("0.01"))


def _percentage(value: Any) -> Decimal:
    return check_percentage(value, field="")


_check_product_code = _pattern(
    r"[A-Z0-9-]{1,20}",
    "1 to 20 characters from A-Z, 0-9 and -",
    "1 a 20 caracteres entre A-Z, 0-9 e -",
)
_check_unit_code = _pattern(
    r"[A-Z0-9]{1,6}",
    "1 to 6 letters A-Z or digits (upper-cased)",
    "1 a 6 letras A-Z ou dígitos (convertidos para maiúsculas)",
    upper=True,
)
_check_payment_code = _pattern(
    r"[A-Z0-9_]{1,10}",
    "1 to 10 characters from A-Z, 0-9 and _",
    "1 a 10 caracteres entre A-Z, 0-9 e _",
)
_check_store_id = _pattern(
    r"[a-z0-9-]{1,40}",
    "a store id of 1 to 40 characters from a-z, 0-9 and -",
    "um id de loja de 1 a 40 caracteres entre a-z, 0-9 e -",
    rule="store_id_format",
)
_check_operator_code = _pattern(r"[0-9]{1,10}", "1 to 10 digits", "1 a 10 dígitos")
_check_ncm_prefix = _pattern(
    r"[0-9]{2,8}",
    "an NCM prefix of 2 to 8 digits",
    "um prefixo de NCM de 2 a 8 dígitos",
    rule="ncm_prefix_format",
)
_check_cst_code = _pattern(
    r"[0-9]{2,3}",
    "a CST code of 2 or 3 digits",
    "um código CST de 2 ou 3 dígitos",
    rule="cst_format",
)
_check_tax_name_format = _pattern(
    r"[a-z]{1,10}",
    'a tax name of letters such as "icms"',
    'um nome de imposto só com letras, como "icms"',
    rule="cst_tax_unknown",
)


def _check_tax_name(value: Any) -> str:
    """Return the tax name lower-cased, as the CST table writes it."""
    return _check_tax_name_format(value.lower() if isinstance(value, str) else value)


Text120 = Annotated[str, _text(120)]
Text20 = Annotated[str, _text(20)]
# The official tables have long descriptions: NCM descriptions reach 1,418 characters
# because they repeat the text of every level of the classification.
OfficialText = Annotated[str, _text(2000)]
OptionalText120 = Annotated[
    str | None, BeforeValidator(_optional(lambda value: check_text(value, max_length=120)))
]
ProductCode = Annotated[str, BeforeValidator(_check_product_code)]
UnitCode = Annotated[str, BeforeValidator(_check_unit_code)]
StoreId = Annotated[str, BeforeValidator(_check_store_id)]
NcmPrefix = Annotated[str, BeforeValidator(_check_ncm_prefix)]
Uuid = Annotated[str, BeforeValidator(check_uuid)]
OptionalEmail = Annotated[str | None, BeforeValidator(_optional(check_email))]
OptionalPhone = Annotated[str | None, BeforeValidator(_optional(check_phone))]
OptionalMunicipality = Annotated[str | None, BeforeValidator(_municipality_with_tables)]
Money = Annotated[Decimal, BeforeValidator(_money_at_least_one_cent)]
OptionalMoney = Annotated[Decimal | None, BeforeValidator(_optional(_money_at_least_one_cent))]
Percentage = Annotated[Decimal, BeforeValidator(_percentage)]
Gtin = Annotated[str, BeforeValidator(check_gtin)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- Reference entities -------------------------------------------------------------------


class Ncm(_Record):
    code: Annotated[str, BeforeValidator(check_ncm_format)]
    description: OfficialText


class Cest(_Record):
    code: Annotated[str, BeforeValidator(check_cest_format)]
    segment: Annotated[str, _text(10)]
    description: OfficialText
    ncm_prefixes: Annotated[list[NcmPrefix], Field(max_length=100)]
    """NCM prefixes the CEST covers. An empty list means any NCM."""


class Cfop(_Record):
    code: Annotated[str, BeforeValidator(check_cfop)]
    description: OfficialText
    direction: Annotated[str, BeforeValidator(lambda value: check_choice(value, ("in", "out")))]

    @field_validator("direction")
    @classmethod
    def _direction_matches_code(cls, direction: str, info: ValidationInfo) -> str:
        code = info.data.get("code")
        if not isinstance(code, str):
            return direction
        expected = "in" if code[0] in CFOP_INBOUND_FIRST_DIGITS else "out"
        if direction != expected:
            raise FieldInvalid(
                field_error(
                    "direction",
                    direction,
                    "cfop_direction",
                    f"CFOP {code} is an {'inbound' if expected == 'in' else 'outbound'} "
                    f'operation, so its direction is "{expected}", not "{direction}".',
                    f"O CFOP {code} é de {'entrada' if expected == 'in' else 'saída'}, então "
                    f'a direção é "{expected}", não "{direction}".',
                )
            )
        return direction


class Cst(_Record):
    tax: Annotated[str, BeforeValidator(_check_tax_name)]
    code: Annotated[str, BeforeValidator(_check_cst_code)]
    description: OfficialText
    applies_to: OptionalText120 = None
    """Operations the code is for: "in", "out" or "all" in the bundled table."""

    @field_validator("tax")
    @classmethod
    def _tax_in_table(cls, tax: str, info: ValidationInfo) -> str:
        taxes = sorted(_tables(info).cst_taxes)
        if tax not in taxes:
            listed = ", ".join(taxes)
            raise FieldInvalid(
                field_error(
                    "tax",
                    tax,
                    "cst_tax_unknown",
                    f"Tax {tax!r} has no codes in the CST table; send one of {listed}.",
                    f"O imposto {tax!r} não tem códigos na tabela CST; envie um de {listed}.",
                )
            )
        return tax


class MunicipalityRecord(_Record):
    ibge_code: Annotated[str, BeforeValidator(check_ibge_format)]
    name: Text120
    uf: Annotated[str, BeforeValidator(check_uf)]

    @field_validator("uf")
    @classmethod
    def _uf_matches_code(cls, uf: str, info: ValidationInfo) -> str:
        code = info.data.get("ibge_code")
        if isinstance(code, str) and UF_IBGE_CODES[uf] != code[:2]:
            raise FieldInvalid(
                field_error(
                    "uf",
                    uf,
                    "ibge_uf_mismatch",
                    f"IBGE code {code} belongs to the state with IBGE code {code[:2]}, but UF "
                    f"{uf} has code {UF_IBGE_CODES[uf]}; fix the UF or the IBGE code.",
                    f"O código IBGE {code} pertence ao estado de código IBGE {code[:2]}, mas a "
                    f"UF {uf} tem código {UF_IBGE_CODES[uf]}; corrija a UF ou o código IBGE.",
                )
            )
        return uf


# --- ERP cadastros ------------------------------------------------------------------------


class Unit(_Record):
    code: UnitCode
    description: Text120
    fractional: bool = False
    """True if quantities may have decimals (kg, m), false for whole units (UN, CX)."""


class Supplier(_Record):
    cnpj: Annotated[str, BeforeValidator(check_cnpj)]
    legal_name: Text120
    trade_name: OptionalText120 = None
    municipality: OptionalMunicipality = None
    email: OptionalEmail = None


class PaymentMethod(_Record):
    code: Annotated[str, BeforeValidator(_check_payment_code)]
    description: Text120
    kind: Annotated[str, BeforeValidator(check_payment_kind)]
    active: bool = True


class Product(_Record):
    code: ProductCode
    description: Text120
    gtins: Annotated[list[Gtin], Field(max_length=20)]
    ncm: Annotated[str, BeforeValidator(_ncm_with_tables)]
    cest: Annotated[str | None, BeforeValidator(_optional(check_cest_format))] = None
    unit: UnitCode
    brand: Annotated[
        str | None, BeforeValidator(_optional(lambda value: check_text(value, max_length=60)))
    ] = None
    shelf_location: Annotated[
        str | None, BeforeValidator(_optional(lambda value: check_text(value, max_length=40)))
    ] = None
    active: bool = True

    @field_validator("gtins")
    @classmethod
    def _gtins_unique(cls, gtins: list[str]) -> list[str]:
        seen: set[str] = set()
        for index, gtin in enumerate(gtins):
            if gtin in seen:
                raise FieldInvalid(
                    field_error(
                        f"gtins.{index}",
                        gtin,
                        "gtin_duplicate",
                        f"GTIN {gtin} appears more than once in the list; send each GTIN once.",
                        f"O GTIN {gtin} aparece mais de uma vez na lista; envie cada GTIN uma vez.",
                    )
                )
            seen.add(gtin)
        return gtins

    @field_validator("cest")
    @classmethod
    def _cest_covers_ncm(cls, cest: str | None, info: ValidationInfo) -> str | None:
        ncm = info.data.get("ncm")
        if cest is None or not isinstance(ncm, str):
            return cest
        return check_cest(cest, ncm, _tables(info))


class TaxRule(_Record):
    code: Text20
    description: Text120
    cfop: Annotated[str, BeforeValidator(_cfop_with_tables)]
    icms_cst: str
    """CST of ICMS (2 digits) or, for Simples Nacional taxpayers, CSOSN (3 digits)."""
    icms_rate: Percentage
    pis_cst: str
    cofins_cst: str
    ncm_prefix: Annotated[str | None, BeforeValidator(_optional(_check_ncm_prefix))] = None

    @field_validator("icms_cst", mode="before")
    @classmethod
    def _icms_cst_in_table(cls, code: Any, info: ValidationInfo) -> str:
        # A 3-digit code is a CSOSN, which the CST table lists under the tax "icmssn".
        is_csosn = isinstance(code, str) and len(code.strip()) == 3
        return check_cst("icmssn" if is_csosn else "icms", code, _tables(info), "icms_cst")

    @field_validator("pis_cst", mode="before")
    @classmethod
    def _pis_cst_in_table(cls, code: Any, info: ValidationInfo) -> str:
        return check_cst("pis", code, _tables(info), "pis_cst")

    @field_validator("cofins_cst", mode="before")
    @classmethod
    def _cofins_cst_in_table(cls, code: Any, info: ValidationInfo) -> str:
        return check_cst("cofins", code, _tables(info), "cofins_cst")


class PriceTable(_Record):
    code: Text20
    description: Text120
    stores: list[StoreId]
    """Store ids that receive the table. An empty list means every store."""

    @field_validator("stores")
    @classmethod
    def _stores_unique(cls, stores: list[str]) -> list[str]:
        seen: set[str] = set()
        for index, store_id in enumerate(stores):
            if store_id in seen:
                raise FieldInvalid(
                    field_error(
                        f"stores.{index}",
                        store_id,
                        "store_duplicate",
                        f"Store {store_id} appears more than once in the list; send each store "
                        "once.",
                        f"A loja {store_id} aparece mais de uma vez na lista; envie cada loja uma "
                        "vez.",
                    )
                )
            seen.add(store_id)
        return stores


class Price(_Record):
    table: Text20
    product: ProductCode
    price: Money
    promotional_price: OptionalMoney = None

    @field_validator("promotional_price")
    @classmethod
    def _promotion_not_above_price(
        cls, promotional: Decimal | None, info: ValidationInfo
    ) -> Decimal | None:
        price = info.data.get("price")
        if promotional is not None and isinstance(price, Decimal) and promotional > price:
            raise FieldInvalid(
                field_error(
                    "promotional_price",
                    str(promotional),
                    "promotional_price_above_price",
                    f"Promotional price {promotional} is above the price {price}; send a "
                    "promotional price at most equal to the price.",
                    f"O preço promocional {promotional} é maior que o preço {price}; envie um "
                    "preço promocional no máximo igual ao preço.",
                )
            )
        return promotional


# --- Store cadastros ----------------------------------------------------------------------


class Customer(_Record):
    id: Uuid
    document: Annotated[str, BeforeValidator(check_cpf_or_cnpj)]
    name: Text120
    email: OptionalEmail = None
    phone: OptionalPhone = None
    municipality: OptionalMunicipality = None


class Operator(_Record):
    id: Uuid
    store_id: StoreId
    code: Annotated[str, BeforeValidator(_check_operator_code)]
    name: Text120
    role: Annotated[
        str,
        BeforeValidator(lambda value: check_choice(value, ("cashier", "supervisor", "manager"))),
    ]
    active: bool = True


# --- Catalog ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntitySpec:
    """One cadastro type: its model, record key and relations."""

    name: str
    model: type[BaseModel]
    key_fields: tuple[str, ...]
    """Fields whose values, joined by ":", make the record key."""
    dependencies: tuple[str, ...]
    """Entities whose records this one refers to, which must be loaded first."""
    natural_keys: tuple[str, ...]
    """Fields that identify the same real thing in two databases, for matching a store
    that never synchronized (a product's GTINs, a customer's CPF or CNPJ)."""


ENTITIES: dict[str, EntitySpec] = {
    spec.name: spec
    for spec in (
        EntitySpec("ncm", Ncm, ("code",), (), ("code",)),
        EntitySpec("cest", Cest, ("code",), (), ("code",)),
        EntitySpec("cfop", Cfop, ("code",), (), ("code",)),
        EntitySpec("cst", Cst, ("tax", "code"), (), ("tax", "code")),
        EntitySpec("municipality", MunicipalityRecord, ("ibge_code",), (), ("ibge_code",)),
        EntitySpec("unit", Unit, ("code",), (), ("code",)),
        EntitySpec("supplier", Supplier, ("cnpj",), ("municipality",), ("cnpj",)),
        EntitySpec("payment_method", PaymentMethod, ("code",), (), ("code",)),
        EntitySpec("product", Product, ("code",), ("ncm", "cest", "unit"), ("gtins",)),
        EntitySpec("tax_rule", TaxRule, ("code",), ("cfop", "cst"), ("code",)),
        EntitySpec("price_table", PriceTable, ("code",), (), ("code",)),
        EntitySpec(
            "price", Price, ("table", "product"), ("price_table", "product"), ("table", "product")
        ),
        EntitySpec("customer", Customer, ("id",), ("municipality",), ("document",)),
        EntitySpec("operator", Operator, ("id",), (), ("store_id", "code")),
    )
}


def _build_key_model(spec: EntitySpec) -> type[BaseModel]:
    """Build a model of the key fields alone, with the same normalization as the full one.

    Field validators that consult the reference tables are not copied, so a key needs no
    tables. For cst, the tax name is checked for its format but not looked up.
    """
    fields: dict[str, Any] = {
        name: (spec.model.model_fields[name].annotation, spec.model.model_fields[name])
        for name in spec.key_fields
    }
    return create_model(
        f"{spec.model.__name__}Key",
        __config__=ConfigDict(extra="ignore", strict=True),
        **fields,
    )


_KEY_MODELS: dict[str, type[BaseModel]] = {
    name: _build_key_model(spec) for name, spec in ENTITIES.items()
}


def entity_spec(name: str) -> EntitySpec:
    """Return the catalog entry of an entity. Raises UnknownEntity for other names."""
    spec = ENTITIES.get(name)
    if spec is None:
        raise UnknownEntity(name, ENTITIES)
    return spec


# --- Errors from pydantic -----------------------------------------------------------------

# Expected JSON types by pydantic error type, for messages of rule "type".
_EXPECTED_TYPES: dict[str, tuple[str, str]] = {
    "bool_type": ("true or false", "true ou false"),
    "list_type": ("a JSON array", "um array JSON"),
    "string_type": ("a string", "um texto"),
    "model_type": ("a JSON object", "um objeto JSON"),
    "dict_type": ("a JSON object", "um objeto JSON"),
}


def _field_error(spec: EntitySpec, details: ErrorDetails) -> FieldError:
    """Translate one pydantic error into a FieldError at the dotted path of its field."""
    path = ".".join(str(part) for part in details["loc"])
    context = details.get("ctx", {})
    cause = context.get("error")
    if isinstance(cause, FieldInvalid):
        error = cause.error
        # Keep a path that the check made more precise than pydantic's, e.g. "gtins.3".
        if path and error.field != path and not error.field.startswith(path + "."):
            error = error.with_field(path)
        return error

    value = details.get("input")
    kind = details["type"]
    if kind == "missing":
        return field_error(
            path,
            None,
            "required",
            f"Field {path} is missing; it is required in every {spec.name} record.",
            f"O campo {path} está ausente; ele é obrigatório em um registro de "
            f"{entity_name_pt_br(spec.name)}.",
        )
    if kind == "extra_forbidden":
        allowed = ", ".join(spec.model.model_fields)
        return field_error(
            path,
            value,
            "unknown_field",
            f"Field {path} is not a {spec.name} field; remove it or fix its name. The fields "
            f"are {allowed}.",
            f"O campo {path} não é um campo de {entity_name_pt_br(spec.name)}; remova-o ou "
            "corrija o nome. Os "
            f"campos são {allowed}.",
        )
    if kind == "too_long":
        maximum = context.get("max_length")
        return field_error(
            path,
            value,
            "max_length",
            f"Field {path} has too many items; the maximum is {maximum}.",
            f"O campo {path} tem itens demais; o máximo é {maximum}.",
        )
    if kind in _EXPECTED_TYPES:
        expected, expected_pt_br = _EXPECTED_TYPES[kind]
        return field_error(
            path,
            value,
            "type",
            f"Field {path} must be {expected}, got {show_value(value)}.",
            f"O campo {path} deve ser {expected_pt_br}, recebido {show_value(value)}.",
        )
    # Checks raise FieldInvalid, so this branch means a pydantic error with no mapping yet.
    return field_error(
        path,
        value,
        "invalid",
        f"Field {path} is invalid: {details['msg']}.",
        f"O campo {path} é inválido: {details['msg']}.",
    )


def _errors_of(spec: EntitySpec, exc: ValidationError) -> list[FieldError]:
    return [_field_error(spec, details) for details in exc.errors()]


# --- Public functions ---------------------------------------------------------------------


def _key_of(spec: EntitySpec, data: Mapping[str, object]) -> str:
    """Return the record key, raising ValidationError if a key field is invalid."""
    key = _KEY_MODELS[spec.name].model_validate(dict(data))
    return ":".join(str(getattr(key, name)) for name in spec.key_fields)


def record_key(entity: str, data: Mapping[str, object]) -> str:
    """Return the record key: the normalized key fields joined by ":".

    Only the key fields are read and checked, e.g. "icms:00" for a cst record and
    "VAREJO:7891000315507" for a price. Raises UnknownEntity, or RecordInvalid if a key
    field is missing or invalid.
    """
    spec = entity_spec(entity)
    if not isinstance(data, Mapping):
        raise RecordInvalid(entity, None, [_not_an_object(data)])
    try:
        return _key_of(spec, data)
    except ValidationError as exc:
        raise RecordInvalid(entity, None, _errors_of(spec, exc)) from exc


def _not_an_object(data: object) -> FieldError:
    return field_error(
        "",
        type(data).__name__,
        "type",
        "The record must be a JSON object.",
        "O registro deve ser um objeto JSON.",
    )


def validate_record(
    entity: str, data: Mapping[str, object], tables: ReferenceTables
) -> dict[str, object]:
    """Validate a whole record and return it normalized and JSON-safe.

    Every field appears in the result, optional ones as None when absent. Raises
    UnknownEntity, or RecordInvalid with all field errors. The record key in that error is
    None when the key fields themselves are invalid.
    """
    return _validated(entity_spec(entity), data, tables).model_dump(mode="json")


def validate_keyed_record(
    entity: str, data: Mapping[str, object], tables: ReferenceTables
) -> tuple[dict[str, object], str]:
    """Validate a whole record as `validate_record` does; return it with its record key.

    The key comes from the validated record, so it costs no second validation of the key
    fields, and equals `record_key(entity, data)`.
    """
    spec = entity_spec(entity)
    record = _validated(spec, data, tables)
    key = ":".join(str(getattr(record, name)) for name in spec.key_fields)
    return record.model_dump(mode="json"), key


def _validated(spec: EntitySpec, data: Mapping[str, object], tables: ReferenceTables) -> BaseModel:
    if not isinstance(data, Mapping):
        raise RecordInvalid(spec.name, None, [_not_an_object(data)])
    try:
        return spec.model.model_validate(dict(data), context={"tables": tables})
    except ValidationError as exc:
        try:
            key: str | None = _key_of(spec, data)
        except ValidationError:
            key = None
        raise RecordInvalid(spec.name, key, _errors_of(spec, exc)) from exc
