"""Tests of the benchmark harness's pure parts: statistics, results, profiles, workload."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from bench.memory import parse_status_kib
from bench.messages import number, text
from bench.profiling import frame_function, frame_package, summarize_raw
from bench.results import (
    BacklogResult,
    BenchResult,
    BenchSettings,
    LatencyRun,
    MachineInfo,
    ServiceMemory,
    TimedRun,
    evaluate_targets,
    kib_to_mb,
    render_table,
    result_json,
)
from bench.stats import (
    LatencySummary,
    median,
    median_summary,
    percentile,
    rate,
    ratio,
    summarize_latencies,
)
from bench.system import free_port
from bench.workload import DESCRIPTION_MAX, Change, Workload, latency_changes
from lojasync.catalog import validate_record
from lojasync.i18n import ENGLISH, PORTUGUESE
from lojasync.reference import load_reference_tables

STORES = ("loja-1", "loja-2", "loja-3")


# --- Statistics ----------------------------------------------------------------------------


def test_percentile_median_of_odd_count() -> None:
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([10.0, 20.0], 0.25) == pytest.approx(12.5)


def test_percentile_p99_of_one_to_hundred() -> None:
    values = [float(value) for value in range(1, 101)]

    assert percentile(values, 0.99) == pytest.approx(99.01)


def test_percentile_extremes_are_min_and_max() -> None:
    values = [5.0, 1.0, 9.0]

    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 1.0) == 9.0


def test_percentile_of_single_value() -> None:
    assert percentile([7.0], 0.99) == 7.0


def test_percentile_rejects_empty_values() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 0.5)


def test_percentile_rejects_fraction_above_one() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        percentile([1.0], 99.0)


def test_median_of_even_count() -> None:
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_median_rejects_no_runs() -> None:
    with pytest.raises(ValueError, match="empty"):
        median([])


def test_rate_divides_count_by_seconds() -> None:
    assert rate(5000, 2.0) == 2500.0


def test_rate_rejects_zero_duration() -> None:
    with pytest.raises(ValueError, match="positive"):
        rate(10, 0.0)


def test_ratio_of_value_to_floor() -> None:
    assert ratio(800.0, 16000.0) == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("value", "floor"), [(None, 100.0), (100.0, None), (100.0, 0.0), (100.0, -1.0)]
)
def test_ratio_is_none_without_usable_floor(value: float | None, floor: float | None) -> None:
    assert ratio(value, floor) is None


def test_latencies_summarized_in_milliseconds() -> None:
    summary = summarize_latencies([0.010, 0.020, 0.030])

    assert summary.count == 3
    assert summary.p50_ms == pytest.approx(20.0)
    assert summary.max_ms == pytest.approx(30.0)


def test_median_summary_takes_each_statistic_separately() -> None:
    runs = [
        LatencySummary(10, p50_ms=5.0, p99_ms=90.0, max_ms=400.0),
        LatencySummary(10, p50_ms=7.0, p99_ms=50.0, max_ms=100.0),
        LatencySummary(10, p50_ms=6.0, p99_ms=70.0, max_ms=900.0),
    ]

    summary = median_summary(runs)

    assert summary.p50_ms == 6.0
    assert summary.p99_ms == 70.0
    assert summary.max_ms == 400.0
    assert summary.count == 30


# --- Results -------------------------------------------------------------------------------


def _settings(latency_rate: float = 1000.0) -> BenchSettings:
    return BenchSettings(
        runs=3,
        products_per_run=10_000,
        batch_size=5000,
        stores=STORES,
        latency_rate=latency_rate,
        latency_seconds=20.0,
        latency_push_size=100,
        backlog=200_000,
        profile_seconds=None,
    )


def _latency_run(p99_ms: float) -> LatencyRun:
    return LatencyRun(
        offered_rate=1000.0,
        achieved_rate=990.0,
        changes=20_000,
        latency=LatencySummary(20_000, p50_ms=40.0, p99_ms=p99_ms, max_ms=p99_ms * 2),
        to_decision=LatencySummary(20_000, p50_ms=15.0, p99_ms=p99_ms / 2, max_ms=p99_ms),
        decision_to_stores=LatencySummary(20_000, p50_ms=25.0, p99_ms=p99_ms / 2, max_ms=p99_ms),
        push_round_trip=LatencySummary(200, p50_ms=30.0, p99_ms=60.0, max_ms=80.0),
        late_pushes=0,
        drain_seconds=0.5,
    )


def _result(latency_rate: float = 1000.0) -> BenchResult:
    machine = MachineInfo(
        cpus=2,
        memory_gib=23.5,
        cpu_model="AMD EPYC",
        rabbitmq_version="RabbitMQ 3.10.8",
        postgresql_version="PostgreSQL 15.20",
        load_start=(0.5, 0.6, 0.7),
        load_end=(1.9, 1.2, 0.9),
    )
    result = BenchResult(
        started_at="2026-12-04T21:00:00+00:00",
        command="python -m bench",
        settings=_settings(latency_rate),
        machine=machine,
        finished_at="2026-12-04T21:10:00+00:00",
    )
    result.throughput = [
        TimedRun(21_500, 25.0, 2.0),
        TimedRun(21_500, 20.0),
        TimedRun(21_500, 30.0),
    ]
    result.direct_floor = [TimedRun(21_500, 1.0), TimedRun(21_500, 2.0), TimedRun(21_500, 4.0)]
    result.broker_floor = [TimedRun(21_500, 4.3)]
    result.latency = [_latency_run(150.0), _latency_run(80.0), _latency_run(90.0)]
    result.memory = [
        ServiceMemory("sync-orchestrator", 101, peak_rss_kib=150_000),
        ServiceMemory("erp-gateway", 102, peak_rss_kib=300_000),
    ]
    result.backlog = BacklogResult(
        events=200_000,
        fill_seconds=40.0,
        drain_seconds=100.0,
        wall_seconds=104.0,
        rss_samples_kib=(90_000, 110_000, 100_000),
        peak_rss_kib=112_000,
    )
    result.converged = True
    return result


def test_json_has_every_section() -> None:
    document = result_json(_result())

    assert set(document) == {
        "benchmark",
        "format_version",
        "started_at",
        "finished_at",
        "command",
        "settings",
        "machine",
        "throughput",
        "direct_write_floor",
        "broker_floor",
        "latency",
        "memory",
        "backlog",
        "profile",
        "converged",
        "error",
        "targets",
    }


def test_json_serializes_without_custom_encoder() -> None:
    text = json.dumps(result_json(_result()))

    assert json.loads(text)["benchmark"] == "lojasync"


def test_json_throughput_is_median_of_runs() -> None:
    document = result_json(_result())

    assert document["throughput"]["median"] == pytest.approx(21_500 / 25.0)
    assert len(document["throughput"]["runs"]) == 3


def test_json_run_keeps_push_seconds_only_when_measured() -> None:
    runs = result_json(_result())["throughput"]["runs"]

    assert runs[0]["push_seconds"] == 2.0
    assert "push_seconds" not in runs[1]


def test_json_ratio_is_median_over_median() -> None:
    document = result_json(_result())

    # lojasync median 860 changes/s; direct-write floor median 10,750 changes/s.
    assert document["direct_write_floor"]["ratio"] == pytest.approx(860 / 10_750, abs=1e-4)


def test_json_latency_median_per_statistic() -> None:
    median_latency = result_json(_result())["latency"]["median"]

    assert median_latency["p99_ms"] == 90.0
    assert median_latency["max_ms"] == 180.0


def test_json_memory_in_megabytes() -> None:
    services = result_json(_result())["memory"]["services"]

    assert services["erp-gateway"]["peak_rss_mb"] == pytest.approx(307.2)


def test_json_without_measurements_has_nulls() -> None:
    result = _result()
    result.throughput = []
    result.latency = []
    result.backlog = None

    document = result_json(result)

    assert document["throughput"]["median"] is None
    assert document["direct_write_floor"]["ratio"] is None
    assert document["latency"]["median"] is None
    assert document["backlog"] is None


def test_kib_converted_to_decimal_megabytes() -> None:
    assert kib_to_mb(200_000) == pytest.approx(204.8)


def test_backlog_drain_rate_uses_drain_span() -> None:
    backlog = _result().backlog
    assert backlog is not None

    assert backlog.drain_rate == pytest.approx(2000.0)


def _verdicts(result: BenchResult) -> dict[str, bool | None]:
    return {check.name: check.met for check in evaluate_targets(result)}


def test_targets_judge_each_figure() -> None:
    verdicts = _verdicts(_result())

    assert verdicts["throughput"] is False
    assert verdicts["direct_ratio"] is False
    assert verdicts["latency_p99"] is True
    assert verdicts["memory:sync-orchestrator"] is True
    assert verdicts["memory:erp-gateway"] is False
    assert verdicts["memory:backlog"] is True


def test_throughput_target_met_at_five_thousand() -> None:
    result = _result()
    result.throughput = [TimedRun(5000, 1.0)]
    result.direct_floor = [TimedRun(10_000, 1.0)]

    verdicts = _verdicts(result)

    assert verdicts["throughput"] is True
    assert verdicts["direct_ratio"] is True


def test_latency_target_not_judged_at_other_rate() -> None:
    verdicts = _verdicts(_result(latency_rate=200.0))

    assert verdicts["latency_p99"] is None


def test_targets_not_judged_without_runs() -> None:
    result = _result()
    result.throughput = []

    verdicts = _verdicts(result)

    assert verdicts["throughput"] is None
    assert verdicts["direct_ratio"] is None


def test_table_lists_figures_and_verdicts() -> None:
    table = render_table(_result(), ENGLISH)

    assert "throughput to 3 stores (changes/s)" in table
    assert "peak RSS erp-gateway (MB)" in table
    assert "NO" in table
    assert "yes" in table


def test_table_in_portuguese() -> None:
    table = render_table(_result(), PORTUGUESE)

    assert "vazão para 3 lojas (alterações/s)" in table
    assert "NÃO" in table


# --- Profiles and /proc --------------------------------------------------------------------

SQLALCHEMY_FRAME = "execute (/v/lib/python3.11/site-packages/sqlalchemy/engine/base.py:1400)"
RAW_PROFILE = "\n".join(
    [
        "_run (lojasync/messaging.py:312);handle (store_registry/handlers.py:271);"
        f"{SQLALCHEMY_FRAME} 30",
        "_run (lojasync/messaging.py:312);handle (store_registry/handlers.py:272) 10",
        "_run_once (/usr/lib/python3.11/asyncio/base_events.py:1900) 5",
        "not a sample line",
    ]
)


def test_profile_counts_every_sample() -> None:
    profile = summarize_raw("store", "raw.txt", RAW_PROFILE)

    assert profile.samples == 45


def test_profile_own_and_total_per_function() -> None:
    profile = summarize_raw("store", "raw.txt", RAW_PROFILE)
    costs = {cost.function: cost for cost in profile.top_own}

    handle = costs["handle (store_registry/handlers.py)"]
    assert handle.own == 10
    assert handle.total == 40


def test_profile_own_samples_by_package() -> None:
    profile = summarize_raw("store", "raw.txt", RAW_PROFILE)

    assert dict(profile.own_by_package) == {
        "sqlalchemy": 30,
        "store_registry": 10,
        "asyncio": 5,
    }


def test_frame_function_drops_line_number() -> None:
    assert frame_function("decide (sync_orchestrator/domain.py:120)") == (
        "decide (sync_orchestrator/domain.py)"
    )


def test_frame_package_of_project_path() -> None:
    frame = "save (/work/main/shared/lojasync/persistence.py:10)"

    assert frame_package(frame) == "lojasync"


def test_status_field_read_in_kib() -> None:
    status = "Name:\tpython\nVmHWM:\t  123456 kB\nVmRSS:\t  100000 kB\n"

    assert parse_status_kib(status, "VmHWM") == 123456


def test_status_field_missing_raises() -> None:
    with pytest.raises(KeyError, match="VmHWM"):
        parse_status_kib("Name:\tpython\n", "VmHWM")


# --- Workload ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workload() -> Workload:
    return Workload(products_per_run=200, slices=2, store_ids=STORES)


def test_run_slices_hold_distinct_products(workload: Workload) -> None:
    first = {record["code"] for entity, record in workload.run_records(0) if entity == "product"}
    second = {record["code"] for entity, record in workload.run_records(1) if entity == "product"}

    assert len(first) == 200
    assert not first & second


def test_run_pushes_products_before_prices(workload: Workload) -> None:
    entities = [entity for entity, _ in workload.run_records(0)]

    assert entities == sorted(entities, key=lambda entity: entity != "product")


def test_store_counts_follow_price_table_scope(workload: Workload) -> None:
    changes = workload.run_records(0)
    store_prices = sum(
        1 for entity, record in changes if entity == "price" and record["table"] == "LOJA-2"
    )

    counts = workload.expected_store_counts(1)

    assert counts["loja-2"]["product"] == 200
    assert counts["loja-2"]["price"] == 200 + store_prices


def test_latency_pool_has_no_store_table_prices(workload: Workload) -> None:
    pool = workload.latency_pool(2)

    assert len(pool) == 800
    assert all(record.get("table", "BASE") == "BASE" for _, record in pool)


def _pool() -> list[Change]:
    return [
        ("product", {"code": "P1", "description": "X" * 120, "unit": "UN"}),
        ("price", {"table": "BASE", "product": "P1", "price": "9.90"}),
        ("product", {"code": "P2", "description": "ARROZ", "unit": "UN"}),
    ]


def test_latency_changes_raise_price_by_generation() -> None:
    changes = latency_changes(_pool(), generation=3, count=3)
    prices = [record["price"] for entity, record in changes if entity == "price"]

    assert prices == [str(Decimal("9.90") + Decimal("0.03"))]


def test_latency_changes_keep_description_within_limit() -> None:
    changes = latency_changes(_pool(), generation=12, count=3)
    descriptions = [str(record["description"]) for entity, record in changes if entity == "product"]

    assert all(len(description) <= DESCRIPTION_MAX for description in descriptions)
    assert all(description.endswith(" v12") for description in descriptions)


def test_latency_changes_wrap_around_pool() -> None:
    changes = latency_changes(_pool(), generation=2, count=2)

    assert [record.get("code", record.get("product")) for _, record in changes] == ["P2", "P1"]


def test_latency_changes_reject_small_pool() -> None:
    with pytest.raises(ValueError, match="needs 4 distinct records"):
        latency_changes(_pool(), generation=1, count=4)


def test_latency_changes_stay_valid(workload: Workload) -> None:
    tables = load_reference_tables()

    changes = latency_changes(workload.latency_pool(1), generation=7, count=100)

    for entity, record in changes:
        validate_record(entity, record, tables)


def test_profile_lists_project_functions_by_total() -> None:
    profile = summarize_raw("store", "raw.txt", RAW_PROFILE)

    assert [cost.function for cost in profile.top_project_total] == [
        "_run (lojasync/messaging.py)",
        "handle (store_registry/handlers.py)",
    ]
    assert profile.top_project_total[0].total == 40


def test_frame_package_of_shortened_path() -> None:
    assert frame_package("wait (threading.py:320)") == "threading"


def test_free_port_never_repeats_a_port() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def test_portuguese_messages_use_brazilian_separators() -> None:
    line = text("progress.setup", PORTUGUESE, records=18575)
    done = text("progress.setup_done", PORTUGUESE, seconds=4.9)

    assert "18.575" in line
    assert "4,9 s" in done
    assert "18,575" in text("progress.setup", "en", records=18575)


def test_number_formats_by_language() -> None:
    assert number(4303.4, PORTUGUESE) == "4.303"
    assert number(0.0801, PORTUGUESE, 3) == "0,080"
    assert number(0.0801, "en", 3) == "0.080"
    assert number(None, "en") == "-"
