"""Command-line messages in English and Brazilian Portuguese.

The language comes from `--lang`, else LOJASYNC_LANG, else LANG (pt_* selects
Brazilian Portuguese), else English.
"""

from __future__ import annotations

import os

ENGLISH = "en"
PORTUGUESE = "pt-BR"

_MESSAGES: dict[str, tuple[str, str]] = {
    "status.title": ("Convergence per store and entity", "Convergência por loja e entidade"),
    "status.store": ("store", "loja"),
    "status.entity": ("entity", "entidade"),
    "status.expected": ("expected", "esperado"),
    "status.held": ("held", "na loja"),
    "status.pending": ("pending", "pendentes"),
    "status.digest": ("digest", "resumo"),
    "status.match": ("match", "confere"),
    "status.yes": ("yes", "sim"),
    "status.no": ("NO", "NÃO"),
    "status.unreachable": (
        "store {store_id} is unreachable at {url}: {error}",
        "a loja {store_id} não responde em {url}: {error}",
    ),
    "status.converged": (
        "All {stores} stores match the orchestrator.",
        "As {stores} lojas conferem com o orquestrador.",
    ),
    "status.diverged": (
        "{stores} of {total} stores differ from the orchestrator.",
        "{stores} de {total} lojas diferem do orquestrador.",
    ),
    "status.no_stores": (
        "No store has announced itself to the orchestrator yet.",
        "Nenhuma loja se anunciou ao orquestrador ainda.",
    ),
    "error.orchestrator": (
        "cannot read the status from the orchestrator at {url}: {error}; check that it runs "
        "and that --orchestrator-url is right",
        "não foi possível ler o status do orquestrador em {url}: {error}; verifique se ele "
        "está rodando e se --orchestrator-url está correto",
    ),
}


def detect_language(requested: str | None = None) -> str:
    choice = requested or os.environ.get("LOJASYNC_LANG") or os.environ.get("LANG", "")
    return PORTUGUESE if choice.lower().replace("_", "-").startswith("pt") else ENGLISH


def message(key: str, language: str, **values: object) -> str:
    english, portuguese = _MESSAGES[key]
    template = portuguese if language == PORTUGUESE else english
    return template.format(**values)
