"""`python -m bench`: options, output and exit status.

Prints one JSON object (to stdout, or to the file given with --json-out) and a table.
The table and the progress lines go to stderr while the JSON goes to stdout, so
`python -m bench > result.json` keeps the JSON alone. Exit status: 0 when every phase
ran (whether or not the targets were met), 1 when a phase failed (the JSON then has
`error` and the figures measured before the failure), 2 for invalid options, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.messages import Progress, text
from bench.results import BenchResult, BenchSettings, render_table, result_json
from bench.runner import BenchFailed, BenchOptions, run_benchmark
from lojasync.i18n import UnknownLanguage, detect_language
from lojasync.logs import configure_logging
from lojasync.settings import DEFAULT_BROKER_URL, DEFAULT_DATABASE_SERVER

STORES = ("loja-1", "loja-2", "loja-3")
# POST /v1/changes accepts at most this many records (LOJASYNC_MAX_BATCH_RECORDS default).
GATEWAY_BATCH_LIMIT = 10_000


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {number}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark lojasync on the real services, RabbitMQ and PostgreSQL. "
        "See BENCHMARKS.md for what each figure means.",
    )
    parser.add_argument(
        "--runs",
        type=_positive_int,
        default=3,
        help="runs per figure; the median is reported (default %(default)s)",
    )
    parser.add_argument(
        "--products",
        type=_positive_int,
        default=10_000,
        help="new products per throughput run; each comes with its prices (default 10000, "
        "about 21,500 changes)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=5000,
        help=f"records per POST /v1/changes and per direct-write transaction "
        f"(at most {GATEWAY_BATCH_LIMIT}, default %(default)s)",
    )

    # The latency runs.
    parser.add_argument(
        "--latency-rate",
        type=_positive_float,
        default=1000.0,
        help="offered load of the latency runs, in changes per second (default %(default).0f)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=_positive_float,
        default=20.0,
        help="duration of each latency run's timetable, in seconds (default %(default).0f)",
    )
    parser.add_argument(
        "--latency-push-size",
        type=_positive_int,
        default=100,
        help="changes per push in the latency runs (default %(default)s)",
    )

    # The backlog check and the profile.
    parser.add_argument(
        "--backlog",
        type=_non_negative_int,
        default=200_000,
        help="events queued for a stopped store registry in the backlog check; 0 skips it "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="add a throughput run with py-spy recording the orchestrator and the first "
        "store (not counted in the medians)",
    )
    parser.add_argument(
        "--profile-seconds",
        type=_positive_float,
        default=20.0,
        help="seconds py-spy records with --profile (default %(default).0f)",
    )

    # Where it runs and where the output goes.
    parser.add_argument(
        "--max-load",
        type=_positive_float,
        default=None,
        help="before starting, wait up to 10 minutes until the 1-minute load average is at "
        "most this",
    )
    parser.add_argument(
        "--json-out", type=Path, default=None, help="write the JSON to this file, not stdout"
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=Path("var/bench"),
        help="service logs and py-spy output go to <log-dir>/<namespace>/",
    )
    parser.add_argument(
        "--broker-url",
        default=os.environ.get("LOJASYNC_BROKER_URL", DEFAULT_BROKER_URL),
        help="RabbitMQ URL (default: LOJASYNC_BROKER_URL, else the local server)",
    )
    parser.add_argument(
        "--database-server",
        default=os.environ.get("LOJASYNC_DATABASE_SERVER", DEFAULT_DATABASE_SERVER),
        help="PostgreSQL server URL without a database name (default: "
        "LOJASYNC_DATABASE_SERVER, else the local server)",
    )
    parser.add_argument(
        "--lang",
        default=None,
        help="output language: en or pt-BR (default: the first of LOJASYNC_LANG, LC_ALL, "
        "LC_MESSAGES and LANG that is set, pt-BR when it starts with pt, else en)",
    )
    return parser


def _options(args: argparse.Namespace, argv: Sequence[str]) -> BenchOptions:
    settings = BenchSettings(
        runs=args.runs,
        products_per_run=args.products,
        batch_size=args.batch_size,
        stores=STORES,
        latency_rate=args.latency_rate,
        latency_seconds=args.latency_seconds,
        latency_push_size=args.latency_push_size,
        backlog=args.backlog,
        profile_seconds=args.profile_seconds if args.profile else None,
    )
    return BenchOptions(
        settings=settings,
        broker_url=args.broker_url,
        database_server=args.database_server,
        log_root=args.log_dir,
        command=shlex.join(["python", "-m", "bench", *argv]),
        max_load=args.max_load,
    )


async def _run_cancellable(options: BenchOptions, progress: Progress) -> BenchResult:
    task = asyncio.current_task()
    if task is not None:
        # SIGTERM stops the benchmark like Ctrl+C, so the services and databases go away.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_benchmark(options, progress)


def _write_outputs(result: BenchResult, json_out: Path | None, language: str) -> None:
    document = json.dumps(result_json(result), indent=2, ensure_ascii=False)
    table = render_table(result, language)
    if json_out is None:
        print(document, flush=True)
        print(table, file=sys.stderr, flush=True)
        return
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(document + "\n")
    print(table, flush=True)
    print(text("progress.json_written", language, path=json_out), file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["ops"]:
        from bench.ops import main as ops_main

        return ops_main(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
    try:
        language = detect_language(args.lang)
    except UnknownLanguage as exc:
        parser.error(str(exc))
    if args.batch_size > GATEWAY_BATCH_LIMIT:
        parser.error(
            f"--batch-size {args.batch_size} is above the gateway's limit of "
            f"{GATEWAY_BATCH_LIMIT} records per push"
        )

    slices = args.runs + (1 if args.profile else 0)
    latency_changes = round(args.latency_rate * args.latency_seconds)
    # Each slice adds its products and their base-table prices to the latency pool.
    if latency_changes > 2 * args.products * slices:
        parser.error(
            f"a latency run changes {latency_changes:,} distinct records but the throughput "
            f"runs create {2 * args.products * slices:,}; raise --products or lower "
            "--latency-rate or --latency-seconds"
        )

    configure_logging("WARNING", "bench")
    # The benchmark reports a failed connection in the output language. Without this,
    # aio-pika's client would print an English error with a traceback before it.
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
    progress = Progress(language)
    options = _options(args, arguments)
    try:
        result = asyncio.run(_run_cancellable(options, progress))
    except BenchFailed as failure:
        progress.say(failure.message, **failure.values)
        if failure.partial is not None:
            _write_outputs(failure.partial, args.json_out, language)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        progress.say("error.interrupted")
        return 130
    _write_outputs(result, args.json_out, language)
    return 0
