"""The 422 response of every service's API to a request that fails validation.

Each field error names the field (its path in the body, query or path), the rule, the
value, and a message in English and in Brazilian Portuguese.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

# Field errors listed in one 422 for a malformed request body; the count covers all.
_REQUEST_ERRORS_SHOWN = 50


async def request_invalid(request: Request, exc: Exception) -> JSONResponse:
    """Return a 422 response listing the field errors (the first 50), each in English and
    Portuguese."""
    assert isinstance(exc, RequestValidationError)
    problems = list(exc.errors())
    errors = [_request_error(problem) for problem in problems[:_REQUEST_ERRORS_SHOWN]]
    first = errors[0] if errors else {"field": "", "message": "", "message_pt_br": ""}
    return JSONResponse(
        {
            "detail": {
                "code": "request_invalid",
                "message": f"the request is invalid ({len(problems)} errors); first: "
                f"{first['field']}: {first['message']}",
                "message_pt_br": f"a requisição é inválida ({len(problems)} erros); primeiro: "
                f"{first['field']}: {first['message_pt_br']}",
                "errors": errors,
                "error_count": len(problems),
            }
        },
        status_code=422,
    )


# Portuguese for the pydantic error types a client of this API can cause.
_PYDANTIC_PT_BR = {
    "missing": "campo obrigatório ausente",
    "extra_forbidden": "campo desconhecido; remova-o",
    "string_type": "deve ser um texto",
    "int_type": "deve ser um número inteiro",
    "int_parsing": "deve ser um número inteiro",
    "dict_type": "deve ser um objeto JSON",
    "list_type": "deve ser um array JSON",
    "model_attributes_type": "deve ser um objeto JSON",
    "greater_than_equal": "valor abaixo do mínimo",
    "less_than_equal": "valor acima do máximo",
    "string_too_short": "texto curto demais",
    "string_too_long": "texto longo demais",
    "enum": "valor fora da lista permitida",
    "literal_error": "valor fora da lista permitida",
    "json_invalid": "o corpo não é JSON válido",
}


def _request_error(problem: Any) -> dict[str, object]:
    location = [str(part) for part in problem.get("loc", ()) if part != "body"]
    kind = str(problem.get("type", "invalid"))
    message = str(problem.get("msg", "invalid value"))
    value = problem.get("input")
    return {
        "field": ".".join(location),
        "value": value if isinstance(value, str | int | float | bool) or value is None else None,
        "rule": kind,
        "message": message,
        "message_pt_br": _PYDANTIC_PT_BR.get(kind, f"valor inválido ({message})"),
    }
