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
    "dead_letters.none": (
        "The dead-letter queue {queue} at {url} is empty (the namespace is set with "
        "--namespace; the demo uses lojasync-demo).",
        "A fila de mensagens mortas {queue} em {url} está vazia (o namespace é definido com "
        "--namespace; a demonstração usa lojasync-demo).",
    ),
    "dead_letters.title": ("{count} dead letter(s)", "{count} mensagem(ns) morta(s)"),
    "dead_letters.message_id": ("message id", "id da mensagem"),
    "dead_letters.queue": ("queue", "fila"),
    "dead_letters.routing_key": ("routing key", "chave de roteamento"),
    "dead_letters.reason": ("reason", "motivo"),
    "dead_letters.choose": (
        "name the message ids to send back, or pass --all",
        "informe os ids das mensagens a reenviar, ou use --all",
    ),
    "dead_letters.republished": (
        "Sent {count} message(s) back to their queues.",
        "{count} mensagem(ns) devolvida(s) às suas filas.",
    ),
    "dead_letters.not_found": (
        "message {message_id} is not in the dead-letter queue",
        "a mensagem {message_id} não está na fila de mensagens mortas",
    ),
    "error.broker": (
        "cannot reach RabbitMQ at {url}: {error}; start it or set --broker-url "
        "(LOJASYNC_BROKER_URL)",
        "não foi possível conectar ao RabbitMQ em {url}: {error}; inicie-o ou defina "
        "--broker-url (LOJASYNC_BROKER_URL)",
    ),
    "error.embedded_broker": (
        "cannot open the embedded broker file of {url}: {error}; run `lojasync demo` to "
        "create it, or set --broker-url (LOJASYNC_BROKER_URL) to a RabbitMQ URL",
        "não foi possível abrir o arquivo do broker embutido de {url}: {error}; rode "
        "`lojasync demo` para criá-lo, ou defina --broker-url (LOJASYNC_BROKER_URL) com uma "
        "URL do RabbitMQ",
    ),
    "error.orchestrator": (
        "cannot read the status from the orchestrator at {url}: {error}; check that it runs "
        "and that --orchestrator-url is right",
        "não foi possível ler o status do orquestrador em {url}: {error}; verifique se ele "
        "está rodando e se --orchestrator-url está correto",
    ),
}


LANGUAGES = (ENGLISH, PORTUGUESE)

# Names of the entities in Brazilian Portuguese, for messages in that language.
ENTITY_NAMES_PT_BR = {
    "ncm": "NCM",
    "cest": "CEST",
    "cfop": "CFOP",
    "cst": "CST",
    "municipality": "município",
    "unit": "unidade",
    "supplier": "fornecedor",
    "payment_method": "forma de pagamento",
    "product": "produto",
    "tax_rule": "regra fiscal",
    "price_table": "tabela de preços",
    "price": "preço",
    "customer": "cliente",
    "operator": "operador",
}


def entity_name_pt_br(entity: str) -> str:
    return ENTITY_NAMES_PT_BR.get(entity, entity)


class UnknownLanguage(ValueError):
    pass


def detect_language(requested: str | None = None) -> str:
    """Return the language code to print in; an unknown `requested` raises UnknownLanguage."""
    if requested is not None:
        for language in LANGUAGES:
            if requested.lower().replace("_", "-") == language.lower():
                return language
        raise UnknownLanguage(
            f"--lang {requested!r} is not supported; use one of: {', '.join(LANGUAGES)}"
        )
    # LOJASYNC_LANG first, then the POSIX order for messages: LC_ALL, LC_MESSAGES, LANG.
    choice = ""
    for variable in ("LOJASYNC_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        choice = os.environ.get(variable, "")
        if choice:
            break
    return PORTUGUESE if choice.lower().replace("_", "-").startswith("pt") else ENGLISH


_PORTUGUESE_SEPARATORS = str.maketrans(",.", ".,")


def format_number(value: float, language: str, decimals: int = 0) -> str:
    """Format `value` with thousands separators and `decimals` decimals, as `language`
    writes numbers: 19,645.5 in English, 19.645,5 in Brazilian Portuguese."""
    text = f"{value:,.{decimals}f}"
    if language != PORTUGUESE:
        return text
    return text.translate(_PORTUGUESE_SEPARATORS)


def message(key: str, language: str, **values: object) -> str:
    english, portuguese = _MESSAGES[key]
    template = portuguese if language == PORTUGUESE else english
    return template.format(**values)


def add_messages(messages: dict[str, tuple[str, str]]) -> None:
    """Register (English, Portuguese) message templates of another module under its keys."""
    clashes = sorted(set(messages) & set(_MESSAGES))
    if clashes:
        raise ValueError(f"message keys already registered: {', '.join(clashes)}")
    _MESSAGES.update(messages)
