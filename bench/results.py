"""The benchmark's results: what each phase measured, the JSON object and the table.

Nothing here does I/O, so the unit tests cover the JSON shape, the medians, the ratios
and the verdict on each target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.messages import number, text
from bench.stats import LatencySummary, median, median_summary, rate, ratio

FORMAT_VERSION = 1

# The targets the project set for the synchronization path.
THROUGHPUT_TARGET = 5000.0
"""Changes per second applied in every store in scope, with three stores."""
DIRECT_RATIO_TARGET = 0.5
"""Share of the direct-write floor that lojasync's throughput should reach."""
LATENCY_TARGET_RATE = 1000.0
"""Offered load, in changes per second, at which the p99 target applies."""
P99_TARGET_MS = 100.0
MEMORY_TARGET_MB = 200.0
"""Peak resident memory of each service process, in MB of 10^6 bytes."""

KIB = 1024
MB = 1_000_000


def kib_to_mb(kib: int) -> float:
    """Convert the kB of /proc/<pid>/status (units of 1024 bytes) to MB of 10^6 bytes."""
    return kib * KIB / MB


@dataclass(frozen=True)
class TimedRun:
    """`changes` applied in every store in scope in `seconds`.

    For the lojasync path `push_seconds` is the time until the gateway had accepted the
    last push; the floors leave it None.
    """

    changes: int
    seconds: float
    push_seconds: float | None = None

    @property
    def changes_per_second(self) -> float:
        return rate(self.changes, self.seconds)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "changes": self.changes,
            "seconds": round(self.seconds, 3),
            "changes_per_second": round(self.changes_per_second, 1),
        }
        if self.push_seconds is not None:
            data["push_seconds"] = round(self.push_seconds, 3)
        return data


def median_rate(runs: Sequence[TimedRun]) -> float | None:
    """Return the median changes/s of `runs`, or None when there is no run."""
    if not runs:
        return None
    return median([run.changes_per_second for run in runs])


@dataclass(frozen=True)
class LatencyRun:
    """One latency run: pushes on a fixed timetable, and the latency of every change."""

    offered_rate: float
    """Changes per second the timetable offered."""
    achieved_rate: float
    """Changes the gateway accepted, divided by the time from the first push's scheduled
    start to the last push's response."""
    changes: int
    latency: LatencySummary
    """From the envelope `time` set by the gateway to the last store's `updated_at`."""
    to_decision: LatencySummary
    """From the envelope `time` to the orchestrator's `event_log.recorded_at`."""
    decision_to_stores: LatencySummary
    """From the orchestrator's `event_log.recorded_at` to the last store's `updated_at`."""
    push_round_trip: LatencySummary
    """Duration of each POST /v1/changes, from request to response."""
    late_pushes: int
    """Pushes that started more than one interval after their scheduled time."""
    drain_seconds: float
    """From the response to the last push until the last store's `updated_at`."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "offered_rate": round(self.offered_rate, 1),
            "achieved_rate": round(self.achieved_rate, 1),
            "changes": self.changes,
            "latency": self.latency.as_dict(),
            "to_decision": self.to_decision.as_dict(),
            "decision_to_stores": self.decision_to_stores.as_dict(),
            "push_round_trip": self.push_round_trip.as_dict(),
            "late_pushes": self.late_pushes,
            "drain_seconds": round(self.drain_seconds, 3),
        }


@dataclass(frozen=True)
class ServiceMemory:
    """Peak resident memory of one service process (VmHWM of /proc/<pid>/status)."""

    service: str
    pid: int
    peak_rss_kib: int

    @property
    def peak_rss_mb(self) -> float:
        return kib_to_mb(self.peak_rss_kib)

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "peak_rss_mb": round(self.peak_rss_mb, 1)}


@dataclass(frozen=True)
class BacklogResult:
    """A stopped store registry's queue filled with `events`, then drained."""

    events: int
    fill_seconds: float
    """Time to publish the events with publisher confirms."""
    drain_seconds: float
    """From the first to the last `updated_at` of the store's rows."""
    wall_seconds: float
    """From the process start to the moment the bench saw every event applied."""
    rss_samples_kib: tuple[int, ...]
    """VmRSS every 0.5 s while the store drained, in kB (units of 1024 bytes)."""
    peak_rss_kib: int
    """VmHWM of the store process once it had drained the queue."""

    @property
    def drain_rate(self) -> float:
        return rate(self.events, self.drain_seconds)

    @property
    def peak_rss_mb(self) -> float:
        return kib_to_mb(self.peak_rss_kib)

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "fill_seconds": round(self.fill_seconds, 3),
            "drain_seconds": round(self.drain_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "drain_rate": round(self.drain_rate, 1),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "rss_samples": len(self.rss_samples_kib),
            "rss_first_mb": round(kib_to_mb(self.rss_samples_kib[0]), 1)
            if self.rss_samples_kib
            else None,
            "rss_last_mb": round(kib_to_mb(self.rss_samples_kib[-1]), 1)
            if self.rss_samples_kib
            else None,
        }


@dataclass(frozen=True)
class FunctionCost:
    """Samples of one function: `own` with it on top of the stack, `total` anywhere in it."""

    function: str
    own: int
    total: int

    def as_dict(self) -> dict[str, Any]:
        return {"function": self.function, "own": self.own, "total": self.total}


@dataclass(frozen=True)
class ServiceProfile:
    """Summary of one py-spy recording of a service."""

    service: str
    raw_path: str
    samples: int
    top_own: tuple[FunctionCost, ...]
    top_project_total: tuple[FunctionCost, ...]
    """The project's own functions with the most samples anywhere in the stack."""
    own_by_package: tuple[tuple[str, int], ...]
    """Samples per package of the function on top of the stack, largest first."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "raw_path": self.raw_path,
            "samples": self.samples,
            "top_own": [cost.as_dict() for cost in self.top_own],
            "top_project_total": [cost.as_dict() for cost in self.top_project_total],
            "own_by_package": dict(self.own_by_package),
        }


@dataclass(frozen=True)
class MachineInfo:
    """The machine the benchmark ran on, and its load."""

    cpus: int
    memory_gib: float
    cpu_model: str
    rabbitmq_version: str
    postgresql_version: str
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float] | None = None
    load_wait_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cpus": self.cpus,
            "memory_gib": round(self.memory_gib, 1),
            "cpu_model": self.cpu_model,
            "rabbitmq_version": self.rabbitmq_version,
            "postgresql_version": self.postgresql_version,
            "loadavg_start": list(self.load_start),
            "loadavg_end": list(self.load_end) if self.load_end is not None else None,
            "load_wait_seconds": round(self.load_wait_seconds, 1),
        }


@dataclass(frozen=True)
class BenchSettings:
    """The options of one benchmark invocation."""

    runs: int
    products_per_run: int
    batch_size: int
    stores: tuple[str, ...]
    latency_rate: float
    latency_seconds: float
    latency_push_size: int
    backlog: int
    profile_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "products_per_run": self.products_per_run,
            "batch_size": self.batch_size,
            "stores": list(self.stores),
            "latency_rate": self.latency_rate,
            "latency_seconds": self.latency_seconds,
            "latency_push_size": self.latency_push_size,
            "backlog": self.backlog,
            "profile_seconds": self.profile_seconds,
        }


@dataclass(frozen=True)
class TargetCheck:
    """One target and whether the measurement met it; `met` is None when not measured."""

    name: str
    description: str
    value: float | None
    met: bool | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "value": round(self.value, 3) if self.value is not None else None,
            "met": self.met,
        }


@dataclass
class BenchResult:
    """Everything one invocation measured; phases that did not run stay empty."""

    started_at: str
    command: str
    settings: BenchSettings
    machine: MachineInfo
    finished_at: str | None = None
    throughput: list[TimedRun] = field(default_factory=list)
    direct_floor: list[TimedRun] = field(default_factory=list)
    broker_floor: list[TimedRun] = field(default_factory=list)
    latency: list[LatencyRun] = field(default_factory=list)
    memory: list[ServiceMemory] = field(default_factory=list)
    backlog: BacklogResult | None = None
    profiles: list[ServiceProfile] = field(default_factory=list)
    converged: bool | None = None
    """Whether every store matched the orchestrator (counts and digests) at the end."""
    error: str | None = None
    """The reason a phase failed; the phases before it keep their figures."""

    @property
    def throughput_median(self) -> float | None:
        return median_rate(self.throughput)

    @property
    def direct_median(self) -> float | None:
        return median_rate(self.direct_floor)

    @property
    def broker_median(self) -> float | None:
        return median_rate(self.broker_floor)

    @property
    def latency_median(self) -> LatencySummary | None:
        if not self.latency:
            return None
        return median_summary([run.latency for run in self.latency])


def evaluate_targets(result: BenchResult) -> list[TargetCheck]:
    """Check each of the project's targets against the measured medians and peaks."""
    stores = len(result.settings.stores)
    throughput = result.throughput_median
    direct_ratio = ratio(throughput, result.direct_median)
    checks = [
        TargetCheck(
            "throughput",
            f"throughput >= {THROUGHPUT_TARGET:,.0f} changes/s to {stores} stores",
            throughput,
            None if throughput is None else throughput >= THROUGHPUT_TARGET,
        ),
        TargetCheck(
            "direct_ratio",
            f"throughput >= {DIRECT_RATIO_TARGET} x the direct-write floor",
            direct_ratio,
            None if direct_ratio is None else direct_ratio >= DIRECT_RATIO_TARGET,
        ),
    ]

    latency = result.latency_median
    at_target_rate = result.settings.latency_rate == LATENCY_TARGET_RATE
    checks.append(
        TargetCheck(
            "latency_p99",
            f"p99 latency < {P99_TARGET_MS:.0f} ms at {LATENCY_TARGET_RATE:,.0f} changes/s",
            latency.p99_ms if latency is not None else None,
            latency.p99_ms < P99_TARGET_MS if latency is not None and at_target_rate else None,
        )
    )

    for memory in result.memory:
        checks.append(
            TargetCheck(
                f"memory:{memory.service}",
                f"peak RSS of {memory.service} < {MEMORY_TARGET_MB:.0f} MB",
                memory.peak_rss_mb,
                memory.peak_rss_mb < MEMORY_TARGET_MB,
            )
        )
    if result.backlog is not None:
        checks.append(
            TargetCheck(
                "memory:backlog",
                f"peak RSS of a store registry draining {result.backlog.events:,} events "
                f"< {MEMORY_TARGET_MB:.0f} MB",
                result.backlog.peak_rss_mb,
                result.backlog.peak_rss_mb < MEMORY_TARGET_MB,
            )
        )
    return checks


def _rounded(value: float | None, digits: int) -> float | None:
    return round(value, digits) if value is not None else None


def result_json(result: BenchResult) -> dict[str, Any]:
    """Build the one JSON object the benchmark prints."""
    throughput = result.throughput_median
    latency = result.latency_median
    return {
        "benchmark": "lojasync",
        "format_version": FORMAT_VERSION,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "command": result.command,
        "settings": result.settings.as_dict(),
        "machine": result.machine.as_dict(),
        "throughput": {
            "unit": "changes/s",
            "runs": [run.as_dict() for run in result.throughput],
            "median": _rounded(throughput, 1),
        },
        "direct_write_floor": {
            "unit": "changes/s",
            "runs": [run.as_dict() for run in result.direct_floor],
            "median": _rounded(result.direct_median, 1),
            "ratio": _rounded(ratio(throughput, result.direct_median), 4),
        },
        "broker_floor": {
            "unit": "changes/s",
            "runs": [run.as_dict() for run in result.broker_floor],
            "median": _rounded(result.broker_median, 1),
            "ratio": _rounded(ratio(throughput, result.broker_median), 4),
        },
        "latency": {
            "offered_rate": result.settings.latency_rate,
            "runs": [run.as_dict() for run in result.latency],
            "median": latency.as_dict() if latency is not None else None,
        },
        "memory": {
            "unit": "MB",
            "services": {memory.service: memory.as_dict() for memory in result.memory},
        },
        "backlog": result.backlog.as_dict() if result.backlog is not None else None,
        "profile": {profile.service: profile.as_dict() for profile in result.profiles},
        "converged": result.converged,
        "error": result.error,
        "targets": [check.as_dict() for check in evaluate_targets(result)],
    }


# --- Table ---------------------------------------------------------------------------------


def _verdict(met: bool | None, language: str) -> str:
    if met is None:
        return ""
    return text("table.yes" if met else "table.no", language)


def render_table(result: BenchResult, language: str) -> str:
    """Render the medians, peaks and targets as an aligned plain-text table."""
    checks = {check.name: check for check in evaluate_targets(result)}
    stores = len(result.settings.stores)
    throughput = result.throughput_median
    rows: list[tuple[str, str, str, str]] = [
        (
            text("table.throughput", language, stores=stores),
            number(throughput, language),
            f">= {number(THROUGHPUT_TARGET, language)}",
            _verdict(checks["throughput"].met, language),
        ),
        (text("table.direct", language), number(result.direct_median, language), "", ""),
        (
            text("table.direct_ratio", language),
            number(checks["direct_ratio"].value, language, 3),
            f">= {number(DIRECT_RATIO_TARGET, language, 1)}",
            _verdict(checks["direct_ratio"].met, language),
        ),
        (text("table.broker", language), number(result.broker_median, language), "", ""),
        (
            text("table.broker_ratio", language),
            number(ratio(throughput, result.broker_median), language, 3),
            "",
            "",
        ),
    ]
    rows.extend(_latency_rows(result, checks, language))
    for memory in result.memory:
        check = checks[f"memory:{memory.service}"]
        rows.append(
            (
                text("table.memory", language, service=memory.service),
                number(memory.peak_rss_mb, language),
                f"< {MEMORY_TARGET_MB:.0f}",
                _verdict(check.met, language),
            )
        )
    if result.backlog is not None:
        backlog = result.backlog
        rows.append(
            (
                text("table.backlog_peak", language, events=backlog.events),
                number(backlog.peak_rss_mb, language),
                f"< {MEMORY_TARGET_MB:.0f}",
                _verdict(checks["memory:backlog"].met, language),
            )
        )
        rows.append(
            (
                text("table.backlog_rate", language, events=backlog.events),
                number(backlog.drain_rate, language),
                "",
                "",
            )
        )
    if result.converged is not None:
        rows.append(
            (text("table.converged", language), _verdict(result.converged, language), "", "")
        )

    lines = [text("table.title", language, date=result.started_at, runs=result.settings.runs)]
    lines.extend(_aligned(rows, language))
    lines.append(_load_line(result.machine, language))
    for profile in result.profiles:
        lines.append("")
        lines.extend(_profile_lines(profile, language))
    return "\n".join(lines)


def _latency_rows(
    result: BenchResult, checks: dict[str, TargetCheck], language: str
) -> list[tuple[str, str, str, str]]:
    latency = result.latency_median
    if latency is None:
        return []
    offered = result.settings.latency_rate
    achieved = median([run.achieved_rate for run in result.latency])
    return [
        (
            text("table.latency", language, stat="p50", rate=offered),
            number(latency.p50_ms, language),
            "",
            "",
        ),
        (
            text("table.latency", language, stat="p99", rate=offered),
            number(latency.p99_ms, language),
            f"< {P99_TARGET_MS:.0f}",
            _verdict(checks["latency_p99"].met, language),
        ),
        (
            text("table.latency", language, stat=text("table.max", language), rate=offered),
            number(latency.max_ms, language),
            "",
            "",
        ),
        (text("table.achieved", language), number(achieved, language), "", ""),
    ]


def _aligned(rows: list[tuple[str, str, str, str]], language: str) -> list[str]:
    header = (
        text("table.figure", language),
        text("table.value", language),
        text("table.target", language),
        text("table.met", language),
    )
    everything = [header, *rows]
    widths = [max(len(row[column]) for row in everything) for column in range(4)]
    lines = []
    for row in everything:
        cells = [
            row[0].ljust(widths[0]),
            row[1].rjust(widths[1]),
            row[2].ljust(widths[2]),
            row[3],
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _load_line(machine: MachineInfo, language: str) -> str:
    end = machine.load_end[0] if machine.load_end is not None else float("nan")
    return text("table.load", language, start=machine.load_start[0], end=end, cpus=machine.cpus)


def _share(count: int, samples: int) -> str:
    return f"{count / samples if samples else 0.0:6.1%}"


def _profile_lines(profile: ServiceProfile, language: str) -> list[str]:
    lines = [text("table.profile", language, service=profile.service, samples=profile.samples)]
    for cost in profile.top_own:
        lines.append(f"  {_share(cost.own, profile.samples)}  {cost.function}")
    lines.append(text("table.profile_project", language, service=profile.service))
    for cost in profile.top_project_total:
        lines.append(f"  {_share(cost.total, profile.samples)}  {cost.function}")
    return lines
