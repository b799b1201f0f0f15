"""Process plumbing for a harness that SIGKILLs parents and must still leave no orphans.

Why this exists: killing a `worker.py` parent leaves its children behind. RQ's
work-horse calls `setpgrp()` (its own process group) and RQ's scheduler runs in a
forked child, so neither dies with the parent nor with `killpg` of the parent's
group. Every process we start gets its own session (`start_new_session=True`), and
sessions, unlike process groups, are inherited by all of these descendants. So
"everything we started" is "every process whose session id is one we created",
which /proc tells us. As a child subreaper we also adopt (and must reap) those
orphans instead of leaving zombies to init.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Collection
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36
_PROC = Path("/proc")


def become_subreaper() -> bool:
    """Make orphaned descendants our children (Linux); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, parent pid, session id, process group) of `pid`, or None when it is gone."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; the fields after its last ")" do not.
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[3]), int(fields[2])


def _pids() -> list[int]:
    try:
        return [int(p.name) for p in _PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return []


def session_members(sessions: Collection[int]) -> list[int]:
    """Live (non-zombie) processes in any of `sessions`: what we started and what it forked."""
    found = []
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None and stat[2] in sessions and stat[0] != "Z":
            found.append(pid)
    return found


def has_work_horse(worker_pid: int) -> bool:
    """True while an RQ worker has a live work-horse: a child leading its own process group.

    (RQ's horse calls `setpgrp()`; the worker's scheduler child stays in the worker's group.)
    """
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None and stat[1] == worker_pid and stat[3] == pid and stat[0] != "Z":
            return True
    return False


def child_sessions() -> set[int]:
    """Sessions led by our direct children: also those started a moment before we could record them."""
    me = os.getpid()
    found = set()
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None and stat[1] == me and stat[2] == pid:
            found.add(pid)
    return found


def reap_adopted() -> int:
    """Reap exited orphans that were re-parented to us; returns how many.

    Only children that are not session leaders: every process we start ourselves
    leads its own session and is reaped by its `Popen`, which must keep its status.
    """
    me, reaped = os.getpid(), 0
    for pid in _pids():
        stat = _stat(pid)
        if stat is None or stat[1] != me or stat[2] == pid or stat[0] != "Z":
            continue
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped += 1
    return reaped


def signal_sessions(sessions: Collection[int], signum: int) -> int:
    """Send `signum` to every live process in `sessions`; returns how many were signalled."""
    count = 0
    for pid in session_members(sessions):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
            count += 1
    return count


def wait_sessions_empty(sessions: Collection[int], timeout: float) -> bool:
    """Poll until no process is left in `sessions` (reaping adopted ones), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        reap_adopted()
        if not session_members(sessions):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def kill_sessions(sessions: Collection[int], grace: float = 0.0) -> None:
    """SIGTERM (when `grace` > 0) then SIGKILL everything left in `sessions`, and reap orphans."""
    if grace > 0 and signal_sessions(sessions, signal.SIGTERM):
        wait_sessions_empty(sessions, grace)
    for _ in range(50):
        if not signal_sessions(sessions, signal.SIGKILL):
            break
        wait_sessions_empty(sessions, 0.5)
    reap_adopted()
