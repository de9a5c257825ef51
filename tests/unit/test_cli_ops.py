"""The operation commands of the `lojasync` CLI, against a scripted orchestrator API."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import lojasync.cli_ops as cli_ops
from lojasync.cli import app

OPERATION_ID = "op-1"


class Orchestrator:
    """Responds to the requests the CLI sends, and records them."""

    def __init__(self, final: dict[str, Any], *, first_status: int = 202) -> None:
        self.final = final
        self.first_status = first_status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST" and self.first_status >= 400:
            detail = {
                "code": "store_not_found",
                "message": "store x is unknown",
                "message_pt_br": "a loja x é desconhecida",
            }
            return httpx.Response(self.first_status, json={"detail": detail})
        if request.method == "POST" and "/decisions" not in request.url.path:
            running = {**self.final, "status": "running", "done": 0, "total": 10}
            return httpx.Response(202, json=running)
        return httpx.Response(200, json=self.final)


def operation(kind: str, status: str, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": OPERATION_ID,
        "kind": kind,
        "store_id": "loja-1",
        "status": status,
        "done": 10,
        "total": 10,
        "result": result,
        "error": None,
    }


@pytest.fixture
def orchestrator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Orchestrator], None]]:
    def install(handler: Orchestrator) -> None:
        original = httpx.AsyncClient

        def client(*args: Any, **kwargs: Any) -> httpx.AsyncClient:
            return original(*args, transport=httpx.MockTransport(handler), **kwargs)

        monkeypatch.setattr(cli_ops.httpx, "AsyncClient", client)
        monkeypatch.setattr(cli_ops, "POLL_SECONDS", 0.0)

    yield install


def run(*arguments: str) -> Any:
    return CliRunner().invoke(app, list(arguments))


def text_of(outcome: Any) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(outcome.output.split())


def test_replay_sends_filters_and_reports(orchestrator: Callable[[Orchestrator], None]) -> None:
    handler = Orchestrator(operation("replay", "done", {"events": 3, "messages": 1, "sample": []}))
    orchestrator(handler)

    outcome = run(
        "replay", "loja-1", "--entity", "product", "--requested-by", "ana", "--lang", "en"
    )

    body = json.loads(handler.requests[0].content)
    assert outcome.exit_code == 0, outcome.output
    assert "Replayed 3 event(s) to loja-1 in 1 message(s)." in text_of(outcome)
    assert handler.requests[0].url.path == "/v1/stores/loja-1/replay"
    assert body["entities"] == ["product"]
    assert body["requested_by"] == "ana"
    assert body["dry_run"] is False


def test_drift_found_exits_one_in_portuguese(orchestrator: Callable[[Orchestrator], None]) -> None:
    report = {
        "store_id": "loja-1",
        "in_sync": False,
        "differences": 2,
        "seconds": 0.1,
        "entities": {
            "product": {
                "expected": 10,
                "held": 9,
                "missing": 1,
                "extra": 0,
                "different": 1,
                "missing_keys": ["P1"],
                "extra_keys": [],
                "different_keys": ["P2"],
            }
        },
    }
    orchestrator(Orchestrator(operation("drift", "done", report)))

    outcome = run("drift", "loja-1", "--lang", "pt-BR")

    assert outcome.exit_code == 1
    assert "A loja loja-1 difere do orquestrador em 2 registro(s)" in text_of(outcome)


def test_refused_request_exits_two(orchestrator: Callable[[Orchestrator], None]) -> None:
    orchestrator(Orchestrator(operation("bootstrap", "done", {}), first_status=404))

    outcome = run("bootstrap", "x", "--lang", "en")

    assert outcome.exit_code == 2
    assert "store x is unknown" in text_of(outcome)


def test_failed_operation_exits_one(orchestrator: Callable[[Orchestrator], None]) -> None:
    failed = {**operation("bootstrap", "failed", {}), "error": "BrokerUnavailable: link down"}
    orchestrator(Orchestrator(failed))

    outcome = run("bootstrap", "loja-1", "--lang", "en")

    assert outcome.exit_code == 1
    assert "operation op-1 failed: BrokerUnavailable: link down" in text_of(outcome)


def test_onboard_awaiting_exits_three(orchestrator: Callable[[Orchestrator], None]) -> None:
    counts = {
        "only_erp": 2,
        "only_store": 1,
        "equal": 1,
        "different": 1,
        "conflict": 1,
        "invalid": 0,
        "only_erp_keys": ["P5", "P6"],
    }
    result = {"dry_run": False, "entities": {"product": counts}, "items": 4, "awaiting": 2}
    orchestrator(Orchestrator(operation("onboarding", "awaiting_decisions", result)))

    outcome = run("onboard", "loja-1", "--lang", "en")

    assert outcome.exit_code == 3
    assert "2 item(s) wait for a decision" in text_of(outcome)


def test_onboard_decide_sends_merge_fields(orchestrator: Callable[[Orchestrator], None]) -> None:
    handler = Orchestrator(operation("onboarding", "done", {"awaiting": 0}))
    orchestrator(handler)

    outcome = run(
        "onboard-decide", OPERATION_ID, "3", "merge", "--field", "email=store", "--lang", "en"
    )

    body = json.loads(handler.requests[0].content)
    assert outcome.exit_code == 0, outcome.output
    assert body["decisions"] == [
        {"item": 3, "decision": "merge", "erp_key": None, "fields": {"email": "store"}}
    ]


def test_onboard_decide_rejects_bad_field(orchestrator: Callable[[Orchestrator], None]) -> None:
    handler = Orchestrator(operation("onboarding", "done", {"awaiting": 0}))
    orchestrator(handler)

    outcome = run("onboard-decide", OPERATION_ID, "3", "merge", "--field", "email", "--lang", "en")

    assert outcome.exit_code == 2
    assert "--field 'email' is invalid" in text_of(outcome)
    assert handler.requests == []


def test_replay_dry_run_lists_sample_columns(
    orchestrator: Callable[[Orchestrator], None],
) -> None:
    sample = {
        "seq": 7,
        "deleted": False,
        "entity": "product",
        "revision": 2,
        "record_key": "P0000042",
        "recorded_at": "2026-12-04T23:00:00+00:00",
    }
    result = {"events": 1, "messages": 0, "sample": [sample]}
    orchestrator(Orchestrator(operation("replay", "done", result)))

    outcome = run("replay", "loja-1", "--dry-run", "--lang", "en")

    row = next(line for line in outcome.output.splitlines() if "P0000042" in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert outcome.exit_code == 0, outcome.output
    assert cells[:5] == ["7", "product", "P0000042", "2", "NO"]
    assert "Dry run: 1 event(s) would be sent to loja-1" in text_of(outcome)
