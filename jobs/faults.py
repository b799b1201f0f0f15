"""Fault injection for the sandbox, so failure paths can be exercised end to end on demand.

A plan is parsed once from configuration (e.g. the SANDBOX_FAULTS variable) and
passed around as an immutable value: no process-global switch can leak a fault
into production, and the caller decides to honour it only in sandbox mode.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from jobs.providers.errors import PermanentProviderError, TransientProviderError

ENV_VAR = "SANDBOX_FAULTS"
EXPECTED = "expected name=fail|flaky:N|hang[:N]|crash[:N], optionally @P% of sagas, comma-separated"
_PAIR = re.compile(
    r"(?P<name>[a-z_]+)=(?P<mode>fail|flaky|hang|crash)(?::(?P<count>[1-9][0-9]*))?"
    r"(?:@(?P<percent>[0-9]{1,2}(?:\.[0-9]+)?|100)%)?"
)


class InjectedFailure(PermanentProviderError):
    """A `fail` fault: behaves like a provider refusing for good, so compensation runs."""

    def __init__(self, name: str) -> None:
        super().__init__("sandbox", "injected_failure", f"fault injected into {name}")


class InjectedTransientFailure(TransientProviderError):
    """A `flaky` or `hang` fault: behaves like a timeout or 5xx, so the step is retried."""

    def __init__(self, name: str, code: str = "injected_flaky") -> None:
        super().__init__("sandbox", code, f"fault injected into {name}")


@dataclass(frozen=True)
class Fault:
    """One fault; `count` limits it to the first N attempts, None means every attempt."""

    mode: str
    count: int | None = None
    percent: float = 100.0  # share of sagas hit, chosen by saga id so all its attempts agree

    def applies(self, attempt: int, saga_id: str = "") -> bool:
        """Attempts count from 1, so `flaky:2` fails attempts 1 and 2 and lets 3 through."""
        if self.count is not None and attempt > self.count:
            return False
        if self.percent >= 100:
            return True
        bucket = int.from_bytes(hashlib.sha256(f"{saga_id}|{self.mode}".encode()).digest()[:4], "big")
        return bucket % 10_000 < self.percent * 100

    def __str__(self) -> str:
        text = self.mode if self.count is None else f"{self.mode}:{self.count}"
        return text if self.percent >= 100 else f"{text}@{self.percent:g}%"


@dataclass(frozen=True)
class FaultPlan:
    """Which step or compensation fails, and how; empty (falsy) when nothing is injected."""

    faults: tuple[tuple[str, Fault], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        """Strict, so a typo in the configuration fails loudly instead of silently injecting nothing."""
        faults: dict[str, Fault] = {}
        for raw in spec.split(","):
            pair = raw.strip()
            if not pair:
                continue
            match = _PAIR.fullmatch(pair)
            mode = match["mode"] if match else ""
            count = int(match["count"]) if match and match["count"] else None
            if match is None or (mode == "fail" and count is not None) or (mode == "flaky" and count is None):
                raise ValueError(f'{ENV_VAR}: "{pair}" is not valid; {EXPECTED}')
            if match["name"] in faults:
                raise ValueError(f'{ENV_VAR}: "{pair}" names {match["name"]} twice; {EXPECTED}')
            percent = float(match["percent"]) if match["percent"] else 100.0
            faults[match["name"]] = Fault(mode, count, percent)
        return cls(tuple(sorted(faults.items())))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FaultPlan:
        """The plan configured in SANDBOX_FAULTS (empty when unset)."""
        env = os.environ if environ is None else environ
        return cls.parse(env.get(ENV_VAR, ""))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.faults)

    def get(self, name: str) -> Fault | None:
        return next((fault for fault_name, fault in self.faults if fault_name == name), None)

    def __bool__(self) -> bool:
        return bool(self.faults)

    def __str__(self) -> str:
        return ",".join(f"{name}={fault}" for name, fault in self.faults)

    def inject(self, name: str, attempt: int, timeout: float, saga_id: str = "") -> None:
        """Call at the start of attempt `attempt` (from 1) of `name`, with the step's timeout."""
        fault = self.get(name)
        if fault is None or not fault.applies(attempt, saga_id):
            return
        if fault.mode == "fail":
            raise InjectedFailure(name)
        if fault.mode == "flaky":
            raise InjectedTransientFailure(name)
        if fault.mode == "hang":
            # Outlive the deadline: the caller has abandoned us by then; the error is for one that hasn't.
            threading.Event().wait(timeout * 2 + 1)
            raise InjectedTransientFailure(name, "injected_hang")
        if fault.mode == "crash":
            # SIGKILL, not an exception: nothing (finally, atexit, RQ's handlers) gets to clean up.
            os.kill(os.getpid(), signal.SIGKILL)
            return
        raise AssertionError(f"unknown fault mode {fault.mode!r}")
