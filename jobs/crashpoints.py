"""Sandbox crash points: kill the whole worker at an exact point of a step, once.

Used by the crash tests and `make chaos` to prove recovery from the moments
that matter: before the provider call, after it but before the record, and
after the record (which commits together with the next enqueue). The hook
drops a marker file first, so a test can assert that the crash really fired
and the restarted worker does not crash again.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from saga import StepContext

POINTS = ("before_call", "after_call", "after_record")


class CrashPoint:
    """SIGKILLs the worker and its work-horse when `step` reaches `point` for the first time."""

    def __init__(self, spec: str, marker_dir: Path) -> None:
        step, _, point = spec.partition(":")
        if point not in POINTS:
            raise ValueError(f"SANDBOX_CRASH_POINT: {spec!r}; expected step:{'|'.join(POINTS)}")
        self.step = step
        self.point = point
        self.marker = marker_dir / f"crash-{step}-{point}.fired"
        # Built in the worker before it forks: this is the worker's pid, not the horse's.
        self.worker_pid = os.getpid()

    def __call__(self, point: str, ctx: StepContext) -> None:
        if point != self.point or ctx.step != self.step or ctx.direction != "do":
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # fired once already; the restarted worker goes on
        if os.getpid() != self.worker_pid:
            os.kill(self.worker_pid, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
