"""Checks of Brazilian identifiers, fiscal codes and money values.

Each check takes a value as received (usually decoded JSON) and returns it normalized, or
raises FieldInvalid with one FieldError. Codes must arrive as JSON strings, because a JSON
number loses the leading zeros of a GTIN, NCM or CPF. Only ASCII digits count as digits.
Check digits are computed with python-stdnum (`stdnum.ean`, `stdnum.br.cpf`,
`stdnum.br.cnpj`), but the errors and messages are lojasync's own.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation, getcontext, localcontext
from typing import TYPE_CHECKING

from stdnum import ean
from stdnum.br import cnpj as stdnum_cnpj
from stdnum.br import cpf as stdnum_cpf
from stdnum.exceptions import ValidationError as StdnumValidationError

from lojasync.errors import LojasyncError

if TYPE_CHECKING:
    from lojasync.reference import ReferenceTables

# IBGE code of each federative unit. The first two digits of a municipality's IBGE code
# are the code of its UF.
UF_IBGE_CODES: dict[str, str] = {
    "RO": "11", "AC": "12", "AM": "13", "RR": "14", "PA": "15", "AP": "16", "TO": "17",
    "MA": "21", "PI": "22", "CE": "23", "RN": "24", "PB": "25", "PE": "26", "AL": "27",
    "SE": "28", "BA": "29",
    "MG": "31", "ES": "32", "RJ": "33", "SP": "35",
    "PR": "41", "SC": "42", "RS": "43",
    "MS": "50", "MT": "51", "GO": "52", "DF": "53",
}  # fmt: skip
UFS = frozenset(UF_IBGE_CODES)

GTIN_LENGTHS = (8, 12, 13, 14)
CFOP_INBOUND_FIRST_DIGITS = frozenset("123")
CFOP_OUTBOUND_FIRST_DIGITS = frozenset("567")
CENT = Decimal("0.01")

_DIGITS = re.compile(r"[0-9]+")
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")
# Separators accepted, and removed, in a formatted CPF or CNPJ ("123.456.789-09").
_DOCUMENT_PUNCTUATION = re.compile(r"[.\-/ ]")
_CNPJ_BODY = re.compile(r"[0-9A-Z]{12}[0-9]{2}")
_SHOWN_MAX_CHARS = 60
# Maximum length of an e-mail address in SMTP (RFC 5321: a 256-octet path minus "<>").
_EMAIL_MAX_CHARS = 254
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE_PUNCTUATION = re.compile(r"[\s().+\-]")
# Maximum number of NCM prefixes listed in a cest_ncm_mismatch message.
_PREFIXES_LISTED = 10


@dataclass(frozen=True)
class FieldError:
    """One failed rule on one field, in a form an API can return as is."""

    field: str
    """Dotted path of the field in the record, e.g. "gtins.1"."""
    value: object
    """The rejected value as received, made JSON-safe."""
    rule: str
    """Stable machine code of the rule, e.g. "gtin_check_digit"."""
    message: str
    """English: what failed, on which value, and how to fix it."""
    message_pt_br: str
    """The same message in Brazilian Portuguese."""

    def as_dict(self) -> dict[str, object]:
        return {
            "field": self.field,
            "value": self.value,
            "rule": self.rule,
            "message": self.message,
            "message_pt_br": self.message_pt_br,
        }

    def with_field(self, field: str) -> FieldError:
        return replace(self, field=field)


class FieldInvalid(LojasyncError, ValueError):
    """A value that failed a validation rule, with the details in `error`.

    It is a ValueError so that pydantic validators report it as a field error. A caller
    that knows the real path of the field replaces it with `error.with_field(...)`.
    """

    def __init__(self, error: FieldError) -> None:
        super().__init__(f"{error.field}: {error.message}")
        self.error = error


def _json_safe(value: object) -> object:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else repr(value)
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    return str(value)


def show_value(value: object) -> str:
    """Render a value for a message in JSON notation, which is what API clients send."""
    try:
        text = json.dumps(_json_safe(value), ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > _SHOWN_MAX_CHARS:
        text = text[: _SHOWN_MAX_CHARS - 1] + "…"
    return text


def field_error(
    field: str, value: object, rule: str, message: str, message_pt_br: str
) -> FieldError:
    """Build a FieldError, converting `value` to JSON-safe types (repr for floats NaN/inf)."""
    return FieldError(field, _json_safe(value), rule, message, message_pt_br)


def _invalid(
    field: str, value: object, rule: str, message: str, message_pt_br: str
) -> FieldInvalid:
    return FieldInvalid(field_error(field, value, rule, message, message_pt_br))


def _require_text(
    value: object, field: str, rule: str, names: tuple[str, str], example: str
) -> str:
    """Return the stripped string, or raise `rule` when the value is not a JSON string."""
    if isinstance(value, str):
        return value.strip()
    raise _invalid(
        field,
        value,
        rule,
        f"{names[0]} must be a JSON string, got {show_value(value)}; send it quoted, e.g. "
        f'"{example}", so that leading zeros are kept.',
        f"{names[1]} deve ser um texto JSON, recebido {show_value(value)}; envie-o entre "
        f'aspas, por exemplo "{example}", para preservar zeros à esquerda.',
    )


def _is_digits(text: str, length: int | None = None) -> bool:
    if _DIGITS.fullmatch(text) is None:
        return False
    return length is None or len(text) == length


# --- Text, codes and identifiers ---------------------------------------------------------


def check_text(value: object, field: str = "", *, max_length: int, min_length: int = 1) -> str:
    """Return the string stripped of surrounding whitespace, within the length limits."""
    if not isinstance(value, str):
        raise _invalid(
            field,
            value,
            "type",
            f"Expected a string, got {show_value(value)}.",
            f"Esperado um texto, recebido {show_value(value)}.",
        )
    text = value.strip()
    if len(text) < min_length:
        if min_length == 1:
            message = "The value is empty; send at least one character other than whitespace."
            message_pt_br = "O valor está vazio; envie ao menos um caractere que não seja espaço."
        else:
            message = f"{show_value(value)} is shorter than {min_length} characters."
            message_pt_br = f"{show_value(value)} tem menos de {min_length} caracteres."
        raise _invalid(field, value, "min_length", message, message_pt_br)
    if len(text) > max_length:
        raise _invalid(
            field,
            value,
            "max_length",
            f"{show_value(value)} has {len(text)} characters; the maximum is {max_length}.",
            f"{show_value(value)} tem {len(text)} caracteres; o máximo é {max_length}.",
        )
    return text


def check_pattern(
    value: object,
    field: str = "",
    *,
    pattern: re.Pattern[str],
    rule: str,
    expected: str,
    expected_pt_br: str,
    upper: bool = False,
) -> str:
    """Return the stripped string (upper-cased if `upper`) if it matches `pattern` entirely.

    `expected` describes the format for the error message, e.g. "1 to 6 letters A-Z or
    digits".
    """
    text = value.strip() if isinstance(value, str) else None
    if text is not None and upper:
        text = text.upper()
    if text is not None and pattern.fullmatch(text) is not None:
        return text
    raise _invalid(
        field,
        value,
        rule,
        f"{show_value(value)} is not valid here; expected {expected}.",
        f"{show_value(value)} não é válido aqui; esperado {expected_pt_br}.",
    )


def check_choice(value: object, choices: tuple[str, ...], field: str = "") -> str:
    """Return the stripped string if it is one of `choices`."""
    text = value.strip() if isinstance(value, str) else None
    if text is not None and text in choices:
        return text
    listed = ", ".join(f'"{choice}"' for choice in choices)
    raise _invalid(
        field,
        value,
        "choice",
        f"{show_value(value)} is not one of the allowed values {listed}.",
        f"{show_value(value)} não é um dos valores permitidos {listed}.",
    )


def check_uuid(value: object, field: str = "id") -> str:
    """Return the UUID in its canonical form: lower-case, hyphenated."""
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value.strip()))
        except ValueError:
            pass
    raise _invalid(
        field,
        value,
        "uuid_format",
        f"{show_value(value)} is not a UUID; send one such as "
        '"3f2b8c1e-6d4a-4e8b-9c55-0a1b2c3d4e5f".',
        f'{show_value(value)} não é um UUID; envie um como "3f2b8c1e-6d4a-4e8b-9c55-0a1b2c3d4e5f".',
    )


def check_email(value: object, field: str = "email") -> str:
    """Return the stripped e-mail address after a plain shape check (one @, a dotted domain).

    Whether the mailbox exists is not checked.
    """
    text = value.strip() if isinstance(value, str) else None
    if text is not None and len(text) <= _EMAIL_MAX_CHARS and _EMAIL.fullmatch(text):
        return text
    raise _invalid(
        field,
        value,
        "email_format",
        f"{show_value(value)} is not an e-mail address; send one such as "
        '"compras@example.com.br", at most 254 characters.',
        f"{show_value(value)} não é um endereço de e-mail; envie um como "
        '"compras@example.com.br", com no máximo 254 caracteres.',
    )


def check_phone(value: object, field: str = "phone") -> str:
    """Return the phone number as its digits, 10 to 13 of them.

    Spaces, parentheses, dots, hyphens and plus signs are removed, so
    "+55 (11) 98765-4321" becomes "5511987654321".
    """
    digits = _PHONE_PUNCTUATION.sub("", value) if isinstance(value, str) else ""
    if 10 <= len(digits) <= 13 and _is_digits(digits):
        return digits
    raise _invalid(
        field,
        value,
        "phone_format",
        f"{show_value(value)} is not a phone number of 10 to 13 digits; send the area code and "
        'number, e.g. "(11) 98765-4321", optionally with the country code "+55".',
        f"{show_value(value)} não é um telefone de 10 a 13 dígitos; envie DDD e número, por "
        'exemplo "(11) 98765-4321", opcionalmente com o código do país "+55".',
    )


# --- GTIN ---------------------------------------------------------------------------------


def check_gtin(value: object, field: str = "gtin") -> str:
    """Return the GTIN (GTIN-8, UPC-A/GTIN-12, EAN-13 or GTIN-14) as its digits.

    All-zero numbers are rejected: ERPs use them as a "no GTIN" placeholder, and a
    placeholder shared by many products would make them match each other.
    """
    text = _require_text(value, field, "gtin_format", ("GTIN", "O GTIN"), "7891000315507")
    if text.upper() == "SEM GTIN":
        raise _invalid(
            field,
            value,
            "gtin_format",
            '"SEM GTIN" is the NF-e placeholder for a product without barcode, not a GTIN; '
            "leave it out, so that the product's list of GTINs is empty.",
            '"SEM GTIN" é o marcador da NF-e para produto sem código de barras, não um GTIN; '
            "omita-o, deixando vazia a lista de GTINs do produto.",
        )
    if not _is_digits(text):
        raise _invalid(
            field,
            value,
            "gtin_format",
            f"GTIN {show_value(value)} contains characters other than digits; send only the "
            "digits printed under the barcode.",
            f"O GTIN {show_value(value)} contém caracteres que não são dígitos; envie apenas os "
            "dígitos impressos sob o código de barras.",
        )
    if len(text) not in GTIN_LENGTHS:
        raise _invalid(
            field,
            value,
            "gtin_length",
            f"GTIN {show_value(value)} has {len(text)} digits; a GTIN has 8, 12, 13 or 14 digits.",
            f"O GTIN {show_value(value)} tem {len(text)} dígitos; um GTIN tem 8, 12, 13 ou 14 "
            "dígitos.",
        )
    if text.strip("0") == "":
        raise _invalid(
            field,
            value,
            "gtin_format",
            f"GTIN {show_value(value)} is all zeros, a placeholder and not a GTIN; leave it out.",
            f"O GTIN {show_value(value)} só tem zeros, um marcador e não um GTIN; omita-o.",
        )
    if ean.calc_check_digit(text[:-1]) != text[-1]:
        raise _invalid(
            field,
            value,
            "gtin_check_digit",
            f"GTIN {show_value(value)} has an invalid check digit; compare the digits with the "
            "barcode on the package.",
            f"O GTIN {show_value(value)} tem dígito verificador inválido; compare os dígitos com o "
            "código de barras da embalagem.",
        )
    return text


# --- NCM and CEST -------------------------------------------------------------------------


def check_ncm_format(value: object, field: str = "ncm") -> str:
    """Return the NCM as 8 digits. Dotted input such as "2203.00.00" is accepted."""
    text = _require_text(value, field, "ncm_format", ("NCM", "O NCM"), "22030000").replace(".", "")
    if not _is_digits(text, 8):
        raise _invalid(
            field,
            value,
            "ncm_format",
            f"NCM {show_value(value)} is not 8 digits; send the 8-digit code, with or without "
            'dots, e.g. "2203.00.00".',
            f"O NCM {show_value(value)} não tem 8 dígitos; envie o código de 8 dígitos, com ou sem "
            'pontos, por exemplo "2203.00.00".',
        )
    return text


def check_ncm(value: object, tables: ReferenceTables, field: str = "ncm") -> str:
    """Return the NCM as 8 digits after checking that the NCM table contains it."""
    code = check_ncm_format(value, field)
    if code not in tables.ncm:
        raise _invalid(
            field,
            value,
            "ncm_unknown",
            f"NCM {code} is not in the NCM table; check the code against the current NCM table.",
            f"O NCM {code} não consta da tabela NCM; confira o código na tabela NCM vigente.",
        )
    return code


def check_cest_format(value: object, field: str = "cest") -> str:
    """Return the CEST as 7 digits. Dotted input such as "03.021.00" is accepted."""
    text = _require_text(value, field, "cest_format", ("CEST", "O CEST"), "0302100").replace(
        ".", ""
    )
    if not _is_digits(text, 7):
        raise _invalid(
            field,
            value,
            "cest_format",
            f"CEST {show_value(value)} is not 7 digits; send the 7-digit code, with or without "
            'dots, e.g. "03.021.00".',
            f"O CEST {show_value(value)} não tem 7 dígitos; envie o código de 7 dígitos, com ou "
            'sem pontos, por exemplo "03.021.00".',
        )
    return text


def _list_prefixes(prefixes: tuple[str, ...]) -> tuple[str, str]:
    listed = ", ".join(prefixes[:_PREFIXES_LISTED])
    hidden = len(prefixes) - _PREFIXES_LISTED
    if hidden <= 0:
        return listed, listed
    return f"{listed} and {hidden} more", f"{listed} e mais {hidden}"


def check_cest(value: object, ncm: str, tables: ReferenceTables, field: str = "cest") -> str:
    """Return the CEST as 7 digits after checking it against the CEST table and the NCM.

    `ncm` must be a normalized NCM (8 digits). It must start with one of the CEST's NCM
    prefixes. A CEST whose table row lists no prefix accepts any NCM, because the table
    states no restriction for it (the "other items" rows, e.g. 01.999.00).
    """
    code = check_cest_format(value, field)
    entry = tables.cest.get(code)
    if entry is None:
        raise _invalid(
            field,
            value,
            "cest_unknown",
            f"CEST {code} is not in the CEST table; check the code, or leave the field out "
            "if the product is not subject to tax substitution.",
            f"O CEST {code} não consta da tabela CEST; confira o código, ou omita o campo se "
            "o produto não está sujeito à substituição tributária.",
        )
    if entry.ncm_prefixes and not ncm.startswith(entry.ncm_prefixes):
        allowed, allowed_pt_br = _list_prefixes(entry.ncm_prefixes)
        raise _invalid(
            field,
            value,
            "cest_ncm_mismatch",
            f"CEST {code} does not cover NCM {ncm}: the CEST table allows NCM codes "
            f"starting with {allowed}; fix the NCM or choose the CEST for this NCM.",
            f"O CEST {code} não abrange o NCM {ncm}: a tabela CEST admite NCM iniciados por "
            f"{allowed_pt_br}; corrija o NCM ou escolha o CEST deste NCM.",
        )
    return code


# --- CFOP and CST -------------------------------------------------------------------------


def check_cfop(value: object, field: str = "cfop") -> str:
    """Return the CFOP as 4 digits. Dotted input such as "5.102" is accepted.

    The first digit must be 1, 2 or 3 (inbound: same state, other state, abroad) or
    5, 6 or 7 (outbound, same order).
    """
    text = _require_text(value, field, "cfop_format", ("CFOP", "O CFOP"), "5102").replace(".", "")
    if not _is_digits(text, 4):
        raise _invalid(
            field,
            value,
            "cfop_format",
            f"CFOP {show_value(value)} is not 4 digits; send the 4-digit code, with or without "
            'the dot, e.g. "5.102".',
            f"O CFOP {show_value(value)} não tem 4 dígitos; envie o código de 4 dígitos, com ou "
            'sem ponto, por exemplo "5.102".',
        )
    if text[0] not in CFOP_INBOUND_FIRST_DIGITS | CFOP_OUTBOUND_FIRST_DIGITS:
        raise _invalid(
            field,
            value,
            "cfop_first_digit",
            f"CFOP {text} starts with {text[0]}; the first digit must be 1, 2 or 3 for "
            "inbound or 5, 6 or 7 for outbound operations.",
            f"O CFOP {text} começa com {text[0]}; o primeiro dígito deve ser 1, 2 ou 3 para "
            "entradas ou 5, 6 ou 7 para saídas.",
        )
    return text


def check_cfop_known(value: object, tables: ReferenceTables, field: str = "cfop") -> str:
    """Return the CFOP as 4 digits after checking that the CFOP table contains it."""
    code = check_cfop(value, field)
    if code not in tables.cfop:
        raise _invalid(
            field,
            value,
            "cfop_unknown",
            f"CFOP {code} is not in the CFOP table; check the code.",
            f"O CFOP {code} não consta da tabela CFOP; confira o código.",
        )
    return code


def check_cst(tax: str, code: object, tables: ReferenceTables, field: str) -> str:
    """Return the CST (or CSOSN) code after checking that the CST table lists it for `tax`.

    `tax` is a tax name as the CST table writes it, e.g. "icms", "icmssn" or "pis".
    """
    text = code.strip() if isinstance(code, str) else None
    if text is not None and (tax, text) in tables.cst:
        return text

    known = sorted(entry_code for entry_tax, entry_code in tables.cst if entry_tax == tax)
    if known:
        known_text = ", ".join(known)
        hint, hint_pt_br = f"valid codes are {known_text}", f"os códigos válidos são {known_text}"
    else:
        hint = f"the CST table has no codes for {tax!r}"
        hint_pt_br = f"a tabela CST não tem códigos para {tax!r}"
    raise _invalid(
        field,
        code,
        "cst_unknown",
        f"CST {show_value(code)} is not a {tax.upper()} code in the CST table; {hint}.",
        f"O CST {show_value(code)} não é um código de {tax.upper()} na tabela CST; {hint_pt_br}.",
    )


# --- CPF and CNPJ -------------------------------------------------------------------------


def _strip_document(
    value: object, field: str, rule: str, names: tuple[str, str], example: str
) -> str:
    text = _require_text(value, field, rule, names, example)
    return _DOCUMENT_PUNCTUATION.sub("", text).upper()


def check_cpf(value: object, field: str = "document") -> str:
    """Return the CPF as 11 digits, without punctuation such as in "123.456.789-09"."""
    number = _strip_document(value, field, "cpf_format", ("CPF", "O CPF"), "12345678909")
    if not _is_digits(number, 11):
        raise _invalid(
            field,
            value,
            "cpf_format",
            f"CPF {show_value(value)} is not 11 digits; send the 11 digits, with or without "
            'punctuation, e.g. "123.456.789-09".',
            f"O CPF {show_value(value)} não tem 11 dígitos; envie os 11 dígitos, com ou sem "
            'pontuação, por exemplo "123.456.789-09".',
        )
    if len(set(number)) == 1:
        # Such numbers pass the check-digit test, but the Receita Federal does not issue them.
        raise _invalid(
            field,
            value,
            "cpf_format",
            f"CPF {show_value(value)} has all digits equal, which is not a valid CPF; check the "
            "number.",
            f"O CPF {show_value(value)} tem todos os dígitos iguais, o que não é um CPF válido; "
            "confira o número.",
        )
    try:
        stdnum_cpf.validate(number)
    except StdnumValidationError as exc:
        raise _invalid(
            field,
            value,
            "cpf_check_digit",
            f"CPF {show_value(value)} has invalid check digits; check the number for typing "
            "errors.",
            f"O CPF {show_value(value)} tem dígitos verificadores inválidos; confira se o número "
            "foi digitado corretamente.",
        ) from exc
    return number


def check_cnpj(value: object, field: str = "document") -> str:
    """Return the CNPJ as 14 characters without punctuation, letters upper-cased.

    Both the numeric CNPJ and the alphanumeric one issued from July 2026 are accepted:
    12 letters or digits followed by 2 check digits.
    """
    number = _strip_document(value, field, "cnpj_format", ("CNPJ", "O CNPJ"), "12ABC34501DE35")
    if _CNPJ_BODY.fullmatch(number) is None:
        raise _invalid(
            field,
            value,
            "cnpj_format",
            f"CNPJ {show_value(value)} is not 12 letters or digits followed by 2 digits; send "
            'the 14 characters, with or without punctuation, e.g. "12.ABC.345/01DE-35".',
            f"O CNPJ {show_value(value)} não tem 12 letras ou dígitos seguidos de 2 dígitos; "
            'envie os 14 caracteres, com ou sem pontuação, por exemplo "12.ABC.345/01DE-35".',
        )
    if len(set(number)) == 1:
        # All-zero and repeated-digit numbers are not issued, although "00000000000000"
        # and "11111111111111" pass the check-digit test.
        raise _invalid(
            field,
            value,
            "cnpj_format",
            f"CNPJ {show_value(value)} has all characters equal, which is not a valid CNPJ; check "
            "the number.",
            f"O CNPJ {show_value(value)} tem todos os caracteres iguais, o que não é um CNPJ "
            "válido; confira o número.",
        )
    try:
        stdnum_cnpj.validate(number)
    except StdnumValidationError as exc:
        raise _invalid(
            field,
            value,
            "cnpj_check_digit",
            f"CNPJ {show_value(value)} has invalid check digits; check the number for typing "
            "errors.",
            f"O CNPJ {show_value(value)} tem dígitos verificadores inválidos; confira se o número "
            "foi digitado corretamente.",
        ) from exc
    return number


def check_cpf_or_cnpj(value: object, field: str = "document") -> str:
    """Return a normalized CPF (11 digits) or CNPJ (14 characters), chosen by length."""
    number = _strip_document(
        value, field, "document_format", ("CPF or CNPJ", "O CPF ou CNPJ"), "12345678909"
    )
    if len(number) == 11:
        return check_cpf(value, field)
    if len(number) == 14:
        return check_cnpj(value, field)
    raise _invalid(
        field,
        value,
        "document_format",
        f"Document {show_value(value)} is neither a CPF (11 digits) nor a CNPJ (14 characters); "
        "send one of them, with or without punctuation.",
        f"O documento {show_value(value)} não é um CPF (11 dígitos) nem um CNPJ (14 caracteres); "
        "envie um deles, com ou sem pontuação.",
    )


# --- Municipality and UF ------------------------------------------------------------------


def check_ibge_format(value: object, field: str = "municipality") -> str:
    """Return the IBGE municipality code as 7 digits."""
    text = _require_text(
        value,
        field,
        "ibge_format",
        ("IBGE municipality code", "O código IBGE de município"),
        "3550308",
    )
    if not _is_digits(text, 7):
        raise _invalid(
            field,
            value,
            "ibge_format",
            f"IBGE municipality code {show_value(value)} is not 7 digits; send the 7-digit code, "
            'e.g. "3550308" for São Paulo.',
            f"O código IBGE de município {show_value(value)} não tem 7 dígitos; envie o código de "
            '7 dígitos, por exemplo "3550308" para São Paulo.',
        )
    return text


def check_ibge_municipality(
    value: object, tables: ReferenceTables, field: str = "municipality"
) -> str:
    """Return the IBGE municipality code after checking the municipality table."""
    code = check_ibge_format(value, field)
    if code not in tables.municipalities:
        raise _invalid(
            field,
            value,
            "ibge_unknown",
            f"IBGE municipality code {code} is not in the municipality table; check the code "
            "in the IBGE list of municipalities.",
            f"O código IBGE de município {code} não consta da tabela de municípios; confira o "
            "código na lista de municípios do IBGE.",
        )
    return code


def check_uf(value: object, field: str = "uf") -> str:
    """Return the two-letter code of a Brazilian federative unit, upper-cased."""
    text = value.strip().upper() if isinstance(value, str) else None
    if text in UFS:
        return text
    raise _invalid(
        field,
        value,
        "uf_unknown",
        f"UF {show_value(value)} is not a Brazilian state code; send one of the 27 two-letter "
        'codes, e.g. "SP".',
        f"A UF {show_value(value)} não é a sigla de um estado brasileiro; envie uma das 27 siglas "
        'de duas letras, por exemplo "SP".',
    )


# --- Payment method -----------------------------------------------------------------------

# tPag, the payment method codes of NF-e and NFC-e (group YA, "detPag").
PAYMENT_KINDS: dict[str, str] = {
    "01": "dinheiro",
    "02": "cheque",
    "03": "cartão de crédito",
    "04": "cartão de débito",
    "05": "crédito loja",
    "10": "vale alimentação",
    "11": "vale refeição",
    "12": "vale presente",
    "13": "vale combustível",
    "15": "boleto bancário",
    "16": "depósito bancário",
    "17": "PIX",
    "18": "transferência bancária, carteira digital",
    "19": "programa de fidelidade, cashback, crédito virtual",
    "90": "sem pagamento",
    "99": "outros",
}


def check_payment_kind(value: object, field: str = "kind") -> str:
    """Return the NF-e payment method code (tPag), a 2-digit string such as "17" for PIX."""
    text = value.strip() if isinstance(value, str) else None
    if text is not None and text in PAYMENT_KINDS:
        return text
    listed = ", ".join(PAYMENT_KINDS)
    raise _invalid(
        field,
        value,
        "payment_kind",
        f"{show_value(value)} is not an NF-e payment method code (tPag); send one of {listed} as "
        'a string, e.g. "17" for PIX.',
        f"{show_value(value)} não é um código de meio de pagamento da NF-e (tPag); envie um de "
        f'{listed} como texto, por exemplo "17" para PIX.',
    )


# --- Money and percentages ----------------------------------------------------------------


@dataclass(frozen=True)
class _DecimalRules:
    rule_prefix: str
    name: str
    name_pt_br: str
    example: str


_MONEY = _DecimalRules("money", "Amount", "O valor", "12.90")
_PERCENTAGE = _DecimalRules("percentage", "Percentage", "O percentual", "18.00")


def _parse_two_decimals(value: object, field: str, rules: _DecimalRules) -> Decimal:
    """Parse a decimal string, JSON integer or Decimal and quantize it to two places.

    JSON numbers with a fraction are rejected because they arrive as binary floats.
    Digits past the second decimal place are accepted only when they are zeros
    ("12.900"), since then no value is lost.
    """
    if isinstance(value, float):
        raise _invalid(
            field,
            value,
            f"{rules.rule_prefix}_not_string",
            f"{rules.name} {show_value(value)} was sent as a JSON number with a fraction, which "
            "can lose precision; send it as a string with two decimal places, e.g. "
            f'"{rules.example}".',
            f"{rules.name_pt_br} {show_value(value)} foi enviado como número JSON com fração, o "
            "que pode perder precisão; envie-o como texto com duas casas decimais, por "
            f'exemplo "{rules.example}".',
        )

    number: Decimal | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    elif isinstance(value, Decimal) and value.is_finite():
        number = value
    elif isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value.strip()):
        number = Decimal(value.strip())
    if number is None:
        raise _invalid(
            field,
            value,
            f"{rules.rule_prefix}_format",
            f"{rules.name} {show_value(value)} is not a decimal number; send a string such as "
            f'"{rules.example}", with a dot as decimal separator and no thousands separator.',
            f"{rules.name_pt_br} {show_value(value)} não é um número decimal; envie um texto como "
            f'"{rules.example}", com ponto como separador decimal e sem separador de milhar.',
        )

    try:
        # Enough precision that quantizing a long amount cannot raise InvalidOperation. A
        # local context took a third of the check's 2.2 µs, so only a long amount gets one.
        needed = len(number.as_tuple().digits) + 4
        if needed <= getcontext().prec:
            quantized = number.quantize(CENT)
        else:
            with localcontext() as context:
                context.prec = needed
                quantized = number.quantize(CENT)
    except InvalidOperation as exc:
        raise _invalid(
            field,
            value,
            f"{rules.rule_prefix}_format",
            f"{rules.name} {show_value(value)} cannot be represented in cents; send a string "
            f'such as "{rules.example}".',
            f"{rules.name_pt_br} {show_value(value)} não pode ser representado em centavos; "
            f'envie um texto como "{rules.example}".',
        ) from exc
    if quantized != number:
        raise _invalid(
            field,
            value,
            f"{rules.rule_prefix}_scale",
            f"{rules.name} {show_value(value)} has more than two decimal places; round it to two, "
            f'e.g. "{rules.example}".',
            f"{rules.name_pt_br} {show_value(value)} tem mais de duas casas decimais; arredonde-o "
            f'para duas, por exemplo "{rules.example}".',
        )
    return quantized


def check_money(value: object, field: str = "price", *, minimum: Decimal = Decimal("0")) -> Decimal:
    """Return an amount in BRL as a Decimal with two decimal places.

    Accepted: a decimal string ("12.90", "12.9", "12"), a JSON integer or a Decimal.
    Rejected: JSON numbers with a fraction, more than two significant decimal places,
    exponents, NaN and Infinity, booleans, and amounts below `minimum`.
    """
    amount = _parse_two_decimals(value, field, _MONEY)
    if amount < minimum:
        raise _invalid(
            field,
            value,
            "money_minimum",
            f"Amount {show_value(value)} is below the minimum of {minimum}; send at least "
            f"{minimum}.",
            f"O valor {show_value(value)} está abaixo do mínimo de {minimum}; envie pelo menos "
            f"{minimum}.",
        )
    return amount


def check_percentage(value: object, field: str) -> Decimal:
    """Return a tax rate in percent (0 to 100) as a Decimal with two decimal places.

    The input rules are those of check_money, with rule codes prefixed "percentage_".
    NOTE: NF-e rate fields such as pICMS allow up to four decimal places, but this check
    accepts two.
    """
    rate = _parse_two_decimals(value, field, _PERCENTAGE)
    if not Decimal(0) <= rate <= Decimal(100):
        raise _invalid(
            field,
            value,
            "percentage_range",
            f"Percentage {show_value(value)} is outside 0 to 100; send the rate in percent, e.g. "
            '"18.00" for 18%.',
            f"O percentual {show_value(value)} está fora do intervalo de 0 a 100; envie a alíquota "
            'em percentual, por exemplo "18.00" para 18%.',
        )
    return rate
