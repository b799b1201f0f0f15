"""`flask saga ...` through Flask's CLI runner, on real Redis and real sagas."""

from __future__ import annotations

import json
from collections.abc import Callable

from flask import Flask

from config import Settings
from jobs.runtime import build_engine
from saga import SagaEngine, SagaRecord, SagaStatus
from tests.conftest import BOOKING


def test_list_filters_by_status_and_call_id(
    app: Flask, engine: SagaEngine, book: Callable[..., str], drain: Callable[[SagaEngine], None]
) -> None:
    done = book(call_id="CA-1", slot={"resource": "flat-1"})
    drain(engine)
    running = book(call_id="CA-2", slot={"resource": "flat-2"})
    runner = app.test_cli_runner()

    table = runner.invoke(args=["saga", "list"])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATUS", "CALL"]
    assert [line.split()[0] for line in lines[1:]] == [done, running]  # oldest first

    only = runner.invoke(args=["saga", "list", "--status", "running", "--json"])
    assert [s["id"] for s in json.loads(only.output)] == [running]
    by_call = runner.invoke(args=["saga", "list", "--call-id", "CA-1", "--json"])
    assert [s["id"] for s in json.loads(by_call.output)] == [done]
    bad = runner.invoke(args=["saga", "list", "--status", "lost"])
    assert bad.exit_code == 2 and "lost" in bad.output


def test_show_prints_the_steps_and_the_timeline(app: Flask, run_saga: Callable[..., SagaRecord]) -> None:
    record = run_saga(sandbox_faults="send_sms=fail")
    result = app.test_cli_runner().invoke(args=["saga", "show", record.id])
    assert result.exit_code == 0, result.output
    assert f"saga {record.id} (booking)  compensated" in result.output
    assert "charge_card     compensated" in result.output
    assert "send_sms do #1" in result.output
    assert "+15005550006" not in result.output and "Ada" not in result.output
    as_json = app.test_cli_runner().invoke(args=["saga", "show", record.id, "--json"])
    assert json.loads(as_json.output)["status"] == "compensated"
    missing = app.test_cli_runner().invoke(args=["saga", "show", "0" * 32])
    assert missing.exit_code == 1 and "not found" in missing.output


def test_retry_and_resolve_act_on_failed_sagas_and_refuse_others(
    app: Flask,
    run_saga: Callable[..., SagaRecord],
    make_settings: Callable[..., Settings],
    drain: Callable[[SagaEngine], None],
) -> None:
    first = run_saga(sandbox_faults="send_sms=fail,refund_card=fail")
    other_slot = {**BOOKING, "call_id": "CA-9", "slot": {**BOOKING["slot"], "resource": "viewing-43"}}
    second = run_saga(other_slot, sandbox_faults="send_sms=fail,refund_card=fail")
    assert first.status == second.status == SagaStatus.FAILED
    runner = app.test_cli_runner()

    no_note = runner.invoke(args=["saga", "resolve", first.id])
    assert no_note.exit_code == 2 and "--note" in no_note.output
    resolved = runner.invoke(args=["saga", "resolve", first.id, "--note", "refunded by hand"])
    assert resolved.exit_code == 0, resolved.output
    again = runner.invoke(args=["saga", "resolve", first.id, "--note", "twice"])
    assert again.exit_code == 1 and "only a failed saga" in again.output

    engine = build_engine(make_settings(), app.extensions["saga_engine"].redis)
    app.extensions["saga_engine"] = engine  # the refunds work again
    retried = runner.invoke(args=["saga", "retry", second.id, "--note", "Stripe is back"])
    assert retried.exit_code == 0, retried.output
    assert retried.output.strip() == f"retrying charge_card of saga {second.id}"
    drain(engine)
    assert engine.get(second.id).status == SagaStatus.COMPENSATED
    assert engine.get(first.id).status == SagaStatus.RESOLVED


def test_cancel_and_stats(app: Flask, engine: SagaEngine, book: Callable[..., str]) -> None:
    saga_id = book()
    runner = app.test_cli_runner()
    result = runner.invoke(args=["saga", "cancel", saga_id, "--note", "caller hung up"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"saga {saga_id}: compensated"
    stats = json.loads(runner.invoke(args=["saga", "stats", "--json"]).output)
    assert stats["by_status"]["compensated"] == 1
    assert stats["finished_last_hour"] == 1
    assert stats["oldest_unfinished"] is None
    text = runner.invoke(args=["saga", "stats"]).output
    assert "finished in the last hour: 1" in text
