"""The verdict for people (a table) and for tools (report.json).

Why both: a person wants the counts and the violations at a glance; a failed run
must also leave everything needed to debug it without re-running: each violating
saga's full history and its ledger rows are in the JSON.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chaos.invariants import COMPENSATED, COMPLETED, FAILED, Violation

SHOWN_VIOLATIONS = 40
SHOWN_FAILED = 10


@dataclass
class Summary:
    """Everything a run reports."""

    requested: int
    seed: int
    workers: int
    faults: str
    workdir: str
    settings: dict[str, str] = field(default_factory=dict)  # the processes' environment settings
    submitted: int = 0  # sagas the API handed out an id for
    unacknowledged: int = 0  # started although the API's answer never arrived
    unanswered: list[str] = field(default_factory=list)  # keys with no answer and no saga: not counted
    rejected: list[str] = field(default_factory=list)  # 4xx answers: a harness bug
    duplicates: int = 0  # bookings posted twice with one Idempotency-Key
    outcomes: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # saga id -> error, for `failed` sagas
    kills: int = 0
    busy_kills: int = 0  # of which orphaned a running work-horse (forking workers only)
    restarts: dict[str, int] = field(default_factory=dict)
    exits: list[str] = field(default_factory=list)  # processes that ended by themselves
    redis_restarts: int = 0
    redis_downtime: float = 0.0
    redis_restarted_after: int | None = None  # answers received when Redis went down
    retried_posts: int = 0  # POSTs answered only after a 5xx or connection error
    duration: float = 0.0
    load_seconds: float = 0.0
    settled_in_time: bool = False
    longest_stall: float = 0.0  # seconds in which no saga settled while some were pending
    untouched_locks: dict[str, float] = field(default_factory=dict)  # lock -> longest s nobody touched it
    violations: list[Violation] = field(default_factory=list)
    clues: dict[str, Any] = field(default_factory=dict)  # liveness clues, when sagas were stuck
    logs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and not self.rejected


def render(s: Summary) -> str:
    """The human table."""
    rate = s.submitted / s.duration if s.duration else 0.0
    outcomes = Counter(s.outcomes)
    rows = [
        ("sagas submitted", f"{s.submitted} of {s.requested} (+{s.unacknowledged} started, answer lost)"),
        *((f"  {status}", str(outcomes.pop(status, 0))) for status in (COMPLETED, COMPENSATED, FAILED)),
        *((f"  {status} (!)", str(count)) for status, count in sorted(outcomes.items())),
        ("not answered", f"{len(s.unanswered)} (never started; not counted)"),
        ("rejected (4xx)", str(len(s.rejected))),
        ("posted twice", f"{s.duplicates} (same Idempotency-Key, concurrently)"),
        ("posts retried", f"{s.retried_posts} (5xx or connection error, same key)"),
        ("worker SIGKILLs", f"{s.kills} ({s.busy_kills} orphaned a running work-horse)"),
        ("restarts", ", ".join(f"{role} {n}" for role, n in sorted(s.restarts.items())) or "0"),
        ("exits by themselves", str(len(s.exits))),
        ("redis restarts", f"{s.redis_restarts} (after {s.redis_restarted_after} answers, "
                           f"down {s.redis_downtime:.1f}s)"),
        ("duration", f"{s.duration:.1f}s (submitting {s.load_seconds:.1f}s), {rate:.1f} sagas/s"),
        ("settled in time", "yes" if s.settled_in_time else "NO"),
        ("longest stall", f"{s.longest_stall:.1f}s (no saga settled while some were pending)"),
        ("locks untouched", ", ".join(f"{name} {sec:.1f}s" for name, sec in s.untouched_locks.items())
                            + " (longest; a live holder releases or refreshes within ~1s)"),
        ("violations", str(len(s.violations))),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    lines = [f"Saga Relay chaos run: {s.requested} sagas, seed {s.seed}, {s.workers} workers",
             f"faults: {s.faults}",
             "settings: " + " ".join(f"{k}={v}" for k, v in sorted(s.settings.items())
                                     if k not in ("SANDBOX_FAULTS", "SANDBOX_LEDGER")), ""]  # fmt: skip
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    if s.failed:
        lines += ["", "failed sagas (a compensation ran out of attempts; a person must act):"]
        failed = sorted(s.failed.items())
        lines += [f"  {saga_id}: {error}" for saga_id, error in failed[:SHOWN_FAILED]]
        if len(failed) > SHOWN_FAILED:
            lines.append(f"  ... and {len(failed) - SHOWN_FAILED} more in report.json")
    if s.rejected:
        lines += ["", "rejected bookings (harness bug):", *(f"  {r}" for r in s.rejected[:10])]
    if s.clues:
        lines += ["", f"sagas were stuck; liveness clues at the deadline: {json.dumps(s.clues)}"]
    if s.violations:
        lines += ["", "VIOLATIONS:"]
        lines += [f"  [{v.invariant}] {v.saga_id}: {v.detail}" for v in s.violations[:SHOWN_VIOLATIONS]]
        if len(s.violations) > SHOWN_VIOLATIONS:
            lines.append(f"  ... and {len(s.violations) - SHOWN_VIOLATIONS} more in report.json")
    lines += ["", "logs:", *(f"  {path}" for path in s.logs)]
    verdict = "PASS: nothing lost, nothing done twice" if s.ok else "FAIL"
    lines += ["", verdict]
    return "\n".join(lines)


def write_json(
    path: Path,
    summary: Summary,
    records: Mapping[str, Mapping[str, Any]],
    ledger: Sequence[Mapping[str, Any]],
) -> None:
    """report.json: the summary, plus history and ledger rows of every saga named by a violation."""
    named = {v.saga_id for v in summary.violations} | set(summary.failed)
    evidence = {
        saga_id: {
            "saga": records.get(saga_id),
            "ledger": [dict(entry) for entry in ledger if entry["saga_id"] == saga_id],
        }
        for saga_id in sorted(named)
    }
    body = {**asdict(summary), "ok": summary.ok, "evidence": evidence}
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
