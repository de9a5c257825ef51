"""Output of the benchmark in English and Brazilian Portuguese.

The language comes from `--lang`, else LOJASYNC_LANG, else LANG, as for the `lojasync`
command (`lojasync.i18n.detect_language`).
"""

from __future__ import annotations

import string
import sys

from lojasync.i18n import PORTUGUESE, format_number

_MESSAGES: dict[str, tuple[str, str]] = {
    # Progress lines, printed to stderr.
    "progress.load_wait": (
        "1-minute load is {load:.2f} (above {limit:.2f}); waiting {seconds:.0f} s more...",
        "a carga de 1 minuto é {load:.2f} (acima de {limit:.2f}); aguardando mais "
        "{seconds:.0f} s...",
    ),
    "progress.load_high": (
        "1-minute load is still {load:.2f} after waiting; measuring anyway (recorded in the JSON)",
        "a carga de 1 minuto ainda é {load:.2f} após a espera; medindo assim mesmo "
        "(registrado no JSON)",
    ),
    "progress.starting": (
        "Starting the services in namespace {namespace} (logs in {log_dir}/)...",
        "Subindo os serviços no namespace {namespace} (logs em {log_dir}/)...",
    ),
    "progress.setup": (
        "Pushing {records:,} reference and parent records (not measured)...",
        "Enviando {records:,} registros de referência e registros-pai (sem medição)...",
    ),
    "progress.setup_done": (
        "  every store matches the orchestrator after {seconds:.1f} s",
        "  todas as lojas conferem com o orquestrador após {seconds:.1f} s",
    ),
    "progress.throughput": (
        "Run {run}/{runs}: throughput, {changes:,} product and price changes...",
        "Rodada {run}/{runs}: vazão, {changes:,} alterações de produtos e preços...",
    ),
    "progress.throughput_done": (
        "  applied in every store in {seconds:.1f} s: {rate:,.0f} changes/s",
        "  aplicadas em todas as lojas em {seconds:.1f} s: {rate:,.0f} alterações/s",
    ),
    "progress.direct": (
        "  direct-write floor: {rate:,.0f} changes/s",
        "  referência de escrita direta: {rate:,.0f} alterações/s",
    ),
    "progress.broker": (
        "  broker floor: {rate:,.0f} changes/s",
        "  referência do broker: {rate:,.0f} alterações/s",
    ),
    "progress.profile": (
        "Profile run: {changes:,} changes with py-spy on {targets} for {seconds:.0f} s...",
        "Rodada de perfil: {changes:,} alterações com py-spy em {targets} por {seconds:.0f} s...",
    ),
    "progress.latency": (
        "Run {run}/{runs}: latency at {rate:,.0f} changes/s for {seconds:.0f} s...",
        "Rodada {run}/{runs}: latência a {rate:,.0f} alterações/s por {seconds:.0f} s...",
    ),
    "progress.latency_done": (
        "  p50 {p50:,.0f} ms, p99 {p99:,.0f} ms, max {max:,.0f} ms",
        "  p50 {p50:,.0f} ms, p99 {p99:,.0f} ms, máx {max:,.0f} ms",
    ),
    "progress.backlog": (
        "Backlog: filling the queue of a stopped store registry with {events:,} events...",
        "Fila acumulada: enchendo a fila de uma loja parada (store registry) com "
        "{events:,} eventos...",
    ),
    "progress.backlog_done": (
        "  drained at {rate:,.0f} events/s, peak RSS {peak:,.0f} MB",
        "  esvaziada a {rate:,.0f} eventos/s, pico de RSS {peak:,.0f} MB",
    ),
    "progress.cleanup": (
        "Stopping the services and dropping the benchmark's databases and queues...",
        "Parando os serviços e apagando os bancos e as filas do benchmark...",
    ),
    "progress.json_written": ("Results written to {path}", "Resultados gravados em {path}"),
    # Errors.
    "error.failed": ("benchmark failed: {error}", "o benchmark falhou: {error}"),
    "error.broker_unreachable": (
        "benchmark failed: cannot reach RabbitMQ at {url}: {error}; start it or pass --broker-url",
        "o benchmark falhou: não foi possível conectar ao RabbitMQ em {url}: {error}; "
        "inicie-o ou informe --broker-url",
    ),
    "error.database_unreachable": (
        "benchmark failed: cannot reach PostgreSQL at {url}: {error}; start it or pass "
        "--database-server",
        "o benchmark falhou: não foi possível conectar ao PostgreSQL em {url}: {error}; "
        "inicie-o ou informe --database-server",
    ),
    "error.interrupted": (
        "benchmark interrupted; the services were stopped and the databases dropped",
        "benchmark interrompido; os serviços foram parados e os bancos apagados",
    ),
    # Table.
    "table.title": (
        "lojasync benchmark, {date} (median of runs: {runs})",
        "benchmark do lojasync, {date} (mediana das rodadas: {runs})",
    ),
    "table.figure": ("figure", "medida"),
    "table.value": ("value", "valor"),
    "table.target": ("target", "meta"),
    "table.met": ("met", "atingida"),
    "table.yes": ("yes", "sim"),
    "table.no": ("NO", "NÃO"),
    "table.not_measured": ("not measured", "não medido"),
    "table.throughput": (
        "throughput to {stores} stores (changes/s)",
        "vazão para {stores} lojas (alterações/s)",
    ),
    "table.direct": (
        "direct-write floor (changes/s)",
        "referência de escrita direta (alterações/s)",
    ),
    "table.direct_ratio": (
        "lojasync / direct-write floor",
        "lojasync / referência de escrita direta",
    ),
    "table.broker": ("broker floor (changes/s)", "referência do broker (alterações/s)"),
    "table.broker_ratio": ("lojasync / broker floor", "lojasync / referência do broker"),
    "table.latency": (
        "latency {stat} at {rate:,.0f} changes/s (ms)",
        "latência {stat} a {rate:,.0f} alterações/s (ms)",
    ),
    "table.max": ("max", "máx"),
    "table.achieved": (
        "offered load reached (changes/s)",
        "carga oferecida alcançada (alterações/s)",
    ),
    "table.memory": ("peak RSS {service} (MB)", "pico de RSS {service} (MB)"),
    "table.backlog_peak": (
        "backlog of {events:,} events: peak RSS of the store (MB)",
        "fila de {events:,} eventos: pico de RSS da loja (MB)",
    ),
    "table.backlog_rate": (
        "backlog of {events:,} events: drain rate (events/s)",
        "fila de {events:,} eventos: vazão de esvaziamento (eventos/s)",
    ),
    "table.converged": (
        "every store matches the orchestrator",
        "todas as lojas conferem com o orquestrador",
    ),
    "table.profile": (
        "py-spy, {service}: top functions by own samples ({samples:,} samples)",
        "py-spy, {service}: funções com mais amostras próprias ({samples:,} amostras)",
    ),
    "table.profile_project": (
        "py-spy, {service}: the project's functions by samples anywhere in the stack",
        "py-spy, {service}: funções do projeto por amostras em qualquer ponto da pilha",
    ),
    "table.load": (
        "1-minute load at start / end: {start:.2f} / {end:.2f} on {cpus} CPU(s)",
        "carga de 1 minuto no início / fim: {start:.2f} / {end:.2f} em {cpus} CPU(s)",
    ),
}


class _PortugueseNumbers(string.Formatter):
    """A formatter that writes numbers with Brazilian separators: 18.575 and 4,9 where
    English writes 18,575 and 4.9."""

    def format_field(self, value: object, format_spec: str) -> str:
        formatted: str = format(value, format_spec)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return formatted.translate(_PORTUGUESE_SEPARATORS)
        return formatted


_PORTUGUESE_SEPARATORS = str.maketrans(",.", ".,")
_PORTUGUESE_FORMATTER = _PortugueseNumbers()


def text(key: str, language: str, **values: object) -> str:
    """Return message `key` in `language`, formatted with `values`, numbers included."""
    english, portuguese = _MESSAGES[key]
    if language == PORTUGUESE:
        return _PORTUGUESE_FORMATTER.format(portuguese, **values)
    return english.format(**values)


def number(value: float | None, language: str, digits: int = 0) -> str:
    """Return `value` with thousands separators and `digits` decimals, or "-" for None."""
    if value is None:
        return "-"
    return format_number(value, language, digits)


class Progress:
    """Prints progress lines to stderr in one language, so stdout can carry the JSON."""

    def __init__(self, language: str) -> None:
        self.language = language

    def say(self, key: str, **values: object) -> None:
        print(text(key, self.language, **values), file=sys.stderr, flush=True)
