"""Fault plans: parsing is strict, each mode behaves as the saga's retry policy expects."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from jobs.faults import Fault, FaultPlan, InjectedFailure, InjectedTransientFailure
from jobs.providers.errors import PermanentProviderError, TransientProviderError


def test_empty_spec_is_no_faults() -> None:
    for spec in ("", "   ", " , "):
        plan = FaultPlan.parse(spec)
        assert not plan
        assert plan.names == frozenset()
        assert str(plan) == ""
        plan.inject("anything", 1, 0.01)


def test_valid_forms() -> None:
    plan = FaultPlan.parse(
        " sync_calendar=fail, send_sms=flaky:2,refund_card=hang,charge_card=crash:1,a=hang:3,b=crash "
    )
    assert plan
    assert plan.names == {"sync_calendar", "send_sms", "refund_card", "charge_card", "a", "b"}
    assert plan.get("sync_calendar") == Fault("fail", None)
    assert plan.get("send_sms") == Fault("flaky", 2)
    assert plan.get("refund_card") == Fault("hang", None)
    assert plan.get("charge_card") == Fault("crash", 1)
    assert plan.get("a") == Fault("hang", 3)
    assert plan.get("b") == Fault("crash", None)
    assert plan.get("missing") is None


def test_str_is_canonical_and_round_trips() -> None:
    plan = FaultPlan.parse("send_sms=flaky:2 , charge_card=crash:1,sync_calendar=fail,refund_card=hang")
    assert str(plan) == "charge_card=crash:1,refund_card=hang,send_sms=flaky:2,sync_calendar=fail"
    assert FaultPlan.parse(str(plan)) == plan


def test_plan_is_immutable() -> None:
    plan = FaultPlan.parse("x=fail")
    with pytest.raises(AttributeError):
        plan.faults = ()  # type: ignore[misc]
    assert hash(plan) == hash(FaultPlan.parse("x=fail"))


def test_from_env() -> None:
    assert FaultPlan.from_env({"SANDBOX_FAULTS": "x=flaky:1"}) == FaultPlan.parse("x=flaky:1")
    assert not FaultPlan.from_env({})


@pytest.mark.parametrize(
    "pair",
    [
        "send_sms=flakey:2",
        "send_sms=flaky",
        "send_sms=flaky:0",
        "send_sms=flaky:-1",
        "send_sms=flaky:x",
        "send_sms=fail:2",
        "send_sms=hang:0",
        "send_sms=crash:",
        "send_sms",
        "=fail",
        "Send_SMS=fail",
        "send-sms=fail",
        "send_sms=",
        "send_sms = fail",
    ],
)
def test_invalid_pair_is_named_in_error(pair: str) -> None:
    with pytest.raises(ValueError) as info:
        FaultPlan.parse(f"charge_card=fail,{pair}")
    message = str(info.value)
    assert f'"{pair}"' in message
    assert "SANDBOX_FAULTS" in message
    assert "name=fail|flaky:N|hang[:N]|crash[:N]" in message


def test_duplicate_name_is_an_error() -> None:
    with pytest.raises(ValueError, match='"send_sms=fail"'):
        FaultPlan.parse("send_sms=flaky:1,send_sms=fail")


def test_no_fault_for_other_names() -> None:
    FaultPlan.parse("x=fail").inject("y", 1, 0.01)


def test_fail_is_permanent_on_every_attempt() -> None:
    plan = FaultPlan.parse("x=fail")
    for attempt in (1, 2, 10):
        with pytest.raises(InjectedFailure) as info:
            plan.inject("x", attempt, 1.0)
        assert isinstance(info.value, PermanentProviderError)
        assert not info.value.retryable
        assert (info.value.provider, info.value.code) == ("sandbox", "injected_failure")


def test_flaky_fails_first_n_attempts_only() -> None:
    plan = FaultPlan.parse("x=flaky:2")
    for attempt in (1, 2):
        with pytest.raises(InjectedTransientFailure) as info:
            plan.inject("x", attempt, 1.0)
        assert isinstance(info.value, TransientProviderError)
        assert info.value.retryable
        assert (info.value.provider, info.value.code) == ("sandbox", "injected_flaky")
    plan.inject("x", 3, 1.0)
    plan.inject("x", 4, 1.0)


def test_fault_applies() -> None:
    assert Fault("crash", None).applies(1) and Fault("crash", None).applies(99)
    assert Fault("hang", 1).applies(1) and not Fault("hang", 1).applies(2)


def test_hang_outlives_timeout_then_raises_transient() -> None:
    started = time.monotonic()
    with pytest.raises(InjectedTransientFailure) as info:
        FaultPlan.parse("x=hang").inject("x", 1, 0.05)
    assert info.value.code == "injected_hang"
    assert time.monotonic() - started >= 0.05 * 2


def test_hang_n_only_first_attempts() -> None:
    FaultPlan.parse("x=hang:1").inject("x", 2, 0.05)


def _crash_child() -> None:
    FaultPlan.parse("x=crash").inject("x", 1, 1.0)


def _crash_later_attempt_child() -> None:
    FaultPlan.parse("x=crash:1").inject("x", 2, 1.0)


def test_crash_kills_the_process_with_sigkill() -> None:
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_crash_child)
    child.start()
    child.join(30)
    assert child.exitcode == -9


def test_crash_n_spares_later_attempts() -> None:
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_crash_later_attempt_child)
    child.start()
    child.join(30)
    assert child.exitcode == 0


def test_percent_hits_a_stable_share_of_sagas() -> None:
    plan = FaultPlan.parse("send_sms=flaky:1@25%")
    fault = plan.get("send_sms")
    assert fault is not None and str(plan) == "send_sms=flaky:1@25%"
    hits = [fault.applies(1, f"saga{i}") for i in range(4000)]
    assert 800 < sum(hits) < 1200
    assert hits == [fault.applies(1, f"saga{i}") for i in range(4000)]  # the same sagas every time
    assert not any(fault.applies(2, f"saga{i}") for i in range(100))


def test_percent_must_be_a_share() -> None:
    for spec in ("x=fail@101%", "x=fail@%", "x=fail@5"):
        with pytest.raises(ValueError, match="not valid"):
            FaultPlan.parse(spec)
