"""The bench's measurement helpers, and one small run of `python -m bench` end to end."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from redis import Redis

from app.models import BookingRequest
from bench.chain import done_stream
from bench.measure import percentile, ratio
from bench.progress import Progress
from bench.report import Figure, ScenarioResult, at_least_x, at_most, table
from bench.roundtrips import RoundTripCounter, Tally, command_name, counted_client
from bench.scenarios.loads import booking_body
from bench.scenarios.waiting import Waiter
from saga import keys

ROOT = Path(__file__).resolve().parent.parent


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0) == 1
    assert percentile(values, 100) == 100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7
    assert percentile([3.0, 1.0, 2.0], 50) == 2  # order does not matter


@pytest.mark.parametrize("pct", [-1, 101])
def test_percentile_refuses_nonsense(pct: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], pct)
    with pytest.raises(ValueError):
        percentile([], 50)


def test_ratio_is_none_without_a_usable_baseline() -> None:
    assert ratio(3, 2) == 1.5
    assert ratio(None, 2) is None
    assert ratio(3, 0) is None


def test_command_name_reads_the_first_command_of_a_request() -> None:
    from redis.connection import Connection

    packer = Connection()
    assert command_name(packer.pack_command("INFO", "commandstats")) == "info"
    assert command_name(packer.pack_commands([("SET", "a", "1"), ("GET", "a")])) == "set"
    assert command_name(b"") == "?"


def test_counter_counts_one_round_trip_per_command_or_pipeline(redis_url: str) -> None:
    counter = RoundTripCounter(everywhere=True).install()
    client = Redis.from_url(redis_url)
    try:
        client.ping()  # the connection's first use: connecting sends nothing we count
        before = counter.count
        client.set("bench:test", 1)
        client.get("bench:test")
        with client.pipeline() as pipe:  # MULTI ... EXEC: one round trip
            pipe.incr("bench:test")
            pipe.incr("bench:test")
            pipe.get("bench:test")
            pipe.execute()
        with counter.paused():
            client.get("bench:test")
        assert counter.count - before == 3
        with pytest.raises(RuntimeError):
            RoundTripCounter(everywhere=True).install()  # one per process
    finally:
        counter.uninstall()
        client.delete("bench:test")
        client.close()
    quiet = RoundTripCounter(everywhere=False).install()
    client = Redis.from_url(redis_url)
    try:
        client.ping()
        with quiet.counting():
            client.ping()
        assert quiet.count == 1
    finally:
        quiet.uninstall()
        client.close()


def test_counted_client_tallies_by_command(redis_url: str) -> None:
    tally = Tally()
    client = counted_client(redis_url, tally)
    try:
        client.ping()  # connecting sends HELLO and CLIENT SETINFO first: real round trips, counted
        before, names = tally.count, tally.names()
        client.zcard("bench:none")
        client.zcard("bench:none")
        client.info("cpu")
    finally:
        client.close()
    assert tally.count - before == 3
    assert {n: c - names.get(n, 0) for n, c in tally.names().items() if c != names.get(n, 0)} == {
        "zcard": 2,
        "info": 1,
    }


def test_waiter_wakes_on_the_keys_the_last_transaction_writes(redis: Redis) -> None:
    saga_key, stream = keys.saga("s1"), done_stream("t1")
    redis.hset(saga_key, "status", "running")

    def finish() -> None:
        redis.hset(saga_key, "status", "completed")
        redis.xadd(stream, {"at": "done"})

    before = redis.config_get("notify-keyspace-events")["notify-keyspace-events"]
    with Waiter(redis) as waiter:
        assert redis.config_get("notify-keyspace-events")["notify-keyspace-events"]
        threading.Thread(target=finish).start()
        assert waiter.saga("s1", timeout=5) == "completed"
        waiter.chain("t1", timeout=5)
        with pytest.raises(TimeoutError):
            waiter.chain("never", timeout=0.1)
    assert redis.config_get("notify-keyspace-events")["notify-keyspace-events"] == before


def test_targets_judge_ratio_or_value() -> None:
    fast = Figure("s", "throughput", 90, "sagas/s", 100, "chain", at_least_x(0.8))
    slow = Figure("s", "throughput", 70, "sagas/s", 100, "chain", at_least_x(0.8))
    small = Figure("s", "memory", 4000, "B", 9000, "chain", at_most(4096, "B"))
    unjudged = Figure("s", "cpu", 1, "ms", None)
    assert (fast.passed, slow.passed, small.passed, unjudged.passed) == (True, False, True, None)
    assert fast.ratio == pytest.approx(0.9)
    text = table([ScenarioResult("s", "scenario", [fast, slow, small, unjudged], notes=["a note"])])
    assert "PASS" in text and "MISS" in text and "0.90x" in text and "a note" in text


def test_progress_rewrites_one_line_on_a_terminal_and_prints_lines_otherwise() -> None:
    tty, plain = io.StringIO(), io.StringIO()
    for stream, is_tty in ((tty, True), (plain, False)):
        progress = Progress(2, stream=stream, tty=is_tty, every=0)
        progress.begin("noop")
        progress.update("half", 0.5, force=True)
        progress.done()
    assert "\r[" in tty.getvalue() and "\n" not in tty.getvalue().split("bench finished")[0].rstrip("\n")
    assert plain.getvalue().count("\n") >= 3 and "\r" not in plain.getvalue()


def test_bench_booking_body_is_what_the_web_stores() -> None:
    body = booking_body(7, "t")
    assert BookingRequest.model_validate(body).saga_data() == body


def test_quick_noop_run_writes_the_expected_json(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    args = ["--quick", "--only", "noop", "--sagas", "50", "--output", str(output)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1. engine overhead" in done.stdout
    document = json.loads(output.read_text())
    assert {"meta", "summary", "scenarios", "figures"} <= document.keys()
    noop = document["scenarios"]["noop"]
    assert noop["error"] is None
    assert {f["name"] for f in noop["figures"]} >= {"throughput", "Redis round trips per saga"}
    for side in ("saga", "chain"):
        assert noop["details"][side]["completed"] == 50
        assert noop["details"][side]["round_trips_per_unit"] > 0
    assert noop["details"]["failed_jobs"] == {"saga": 0, "chain": 0}
