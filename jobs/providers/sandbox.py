"""Sandbox providers that act like Stripe's and Twilio's test modes and Google Calendar.

Their ledger is a SQLite file rather than Redis on purpose: it stands for the
outside world, so a test can check what "really happened" without trusting the
store the saga itself writes to. Several RQ worker processes (forked, each with
threads) write to the same file, hence WAL, a long busy timeout, one short
`BEGIN IMMEDIATE` transaction per write and one connection per thread and process.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import sqlite3
import string
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs.providers.base import Calendar, ChargeRequest, Messaging, Payments
from jobs.providers.errors import CardDeclined, InvalidPhoneNumber, PermanentProviderError

BUSY_TIMEOUT_S = 30.0
INVALID_NUMBER = "+15005550001"  # Twilio's magic test number for error 21211

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    saga_id TEXT NOT NULL,
    idempotency_key TEXT UNIQUE NOT NULL,
    ref TEXT NOT NULL,
    detail TEXT NOT NULL,
    at TEXT NOT NULL
)
"""
_COLUMNS = "seq, kind, saga_id, idempotency_key, ref, detail, at"
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_ALNUM = string.ascii_letters + string.digits


def _random_ref(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def _as_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    seq, kind, saga_id, key, ref, detail, at = row
    return {
        "seq": seq,
        "kind": kind,
        "saga_id": saga_id,
        "idempotency_key": key,
        "ref": ref,
        "detail": json.loads(detail),
        "at": at,
    }


def _get(conn: sqlite3.Connection, idempotency_key: str) -> dict[str, Any] | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM entries WHERE idempotency_key = ?", (idempotency_key,)
    ).fetchone()
    return None if row is None else _as_dict(row)


def _put(
    conn: sqlite3.Connection, kind: str, saga_id: str, idempotency_key: str, ref: str, detail: dict[str, Any]
) -> dict[str, Any]:
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    conn.execute(
        "INSERT INTO entries (kind, saga_id, idempotency_key, ref, detail, at) VALUES (?, ?, ?, ?, ?, ?)",
        (kind, saga_id, idempotency_key, ref, json.dumps(detail, sort_keys=True), at),
    )
    found = _get(conn, idempotency_key)
    assert found is not None
    return found


class SandboxLedger:
    """The record of everything the sandbox providers did, shared by all worker processes."""

    def __init__(self, path: str | Path) -> None:
        self.__setstate__({"path": Path(path)})

    def __getstate__(self) -> dict[str, Any]:
        # Only the path crosses a process boundary (spawn pickles the object).
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path: Path = state["path"]
        self._local = threading.local()
        # Connections inherited through fork are kept alive, never used nor closed:
        # closing one in a child could disturb the parent's locks and WAL.
        self._inherited: list[sqlite3.Connection] = []

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        if conn is not None:
            self._inherited.append(conn)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        # Switching a new file to WAL can fail with "database is locked" without waiting
        # for the busy timeout when several processes open it at once: take turns.
        with open(f"{self.path}.init-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(_SCHEMA)
        conn.execute("PRAGMA synchronous = NORMAL")
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; IMMEDIATE so a read-then-write cannot race another writer."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def find(self, idempotency_key: str) -> dict[str, Any] | None:
        """The entry recorded under `idempotency_key`, or None."""
        return _get(self._conn(), idempotency_key)

    def insert_once(
        self, *, kind: str, saga_id: str, idempotency_key: str, ref: str, detail: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Record an entry unless the key is taken; returns (entry, created) so replays see the original."""
        with self._write() as conn:
            existing = _get(conn, idempotency_key)
            if existing is not None:
                return existing, False
            return _put(conn, kind, saga_id, idempotency_key, ref, detail), True

    def entries(self, saga_id: str | None = None) -> list[dict[str, Any]]:
        """All entries in the order they happened, optionally for one saga."""
        sql = f"SELECT {_COLUMNS} FROM entries"
        args: tuple[str, ...] = ()
        if saga_id is not None:
            sql, args = sql + " WHERE saga_id = ?", (saga_id,)
        return [_as_dict(row) for row in self._conn().execute(sql + " ORDER BY seq", args)]

    def calendar_events(self) -> set[str]:
        """Event ids created and not deleted: what a user would see in their calendar."""
        rows = self._conn().execute(
            "SELECT ref FROM entries WHERE kind = 'event_created'"
            " AND ref NOT IN (SELECT ref FROM entries WHERE kind = 'event_deleted')"
        )
        return {ref for (ref,) in rows}

    def clear(self) -> None:
        """Forget everything (tests reuse one file between cases)."""
        with self._write() as conn:
            conn.execute("DELETE FROM entries")


def live_events(ledger: SandboxLedger) -> set[str]:
    """Event ids that exist in the sandbox calendar right now."""
    return ledger.calendar_events()


class SandboxPayments(Payments):
    """Stripe test mode: `pm_card_*` methods succeed, `*Declined*` ones are declined."""

    def __init__(self, ledger: SandboxLedger) -> None:
        self.ledger = ledger

    @staticmethod
    def _replay(entry: dict[str, Any], amount: int, currency: str) -> str:
        # Stripe rejects reuse of a key with different parameters instead of charging twice.
        detail = entry["detail"]
        if entry["kind"] != "charge" or detail.get("amount") != amount or detail.get("currency") != currency:
            raise PermanentProviderError(
                "stripe",
                "idempotency_error",
                f"Keys for idempotent requests can only be used with the same parameters "
                f"they were first used with (key {entry['idempotency_key']!r}).",
            )
        return str(entry["ref"])

    def charge(
        self, request: ChargeRequest, *, known_ref: str | None, record: Callable[[str], None], timeout: float
    ) -> str:
        """Charge once per key; a replay returns the first charge like Stripe's idempotency layer.

        The sandbox charges in one atomic write, so there is no intermediate id to record.
        """
        key, amount, currency, method = (
            request.idempotency_key,
            request.amount,
            request.currency,
            request.payment_method,
        )
        existing = self.ledger.find(key)
        if existing is not None:
            return self._replay(existing, amount, currency)
        if "Declined" in method:
            raise CardDeclined("stripe", "card_declined", "Your card was declined.")
        if not method.startswith("pm_"):
            raise PermanentProviderError("stripe", "resource_missing", f"No such PaymentMethod: '{method}'")
        detail = {"amount": amount, "currency": currency, "payment_method": method}
        entry, created = self.ledger.insert_once(
            kind="charge", saga_id=request.saga_id, idempotency_key=key, ref=_random_ref("ch_"), detail=detail
        )
        return str(entry["ref"]) if created else self._replay(entry, amount, currency)

    def capture(
        self, request: ChargeRequest, *, charge_ref: str, idempotency_key: str, timeout: float
    ) -> str:
        """Sandbox charges are captured at once: confirm the charge exists and return it."""
        charge = self.ledger.find(request.idempotency_key)
        if charge is None or charge["kind"] != "charge":
            raise PermanentProviderError("stripe", "resource_missing", "No such charge to capture")
        return str(charge["ref"])

    def refund(
        self, request: ChargeRequest, *, charge_ref: str | None, idempotency_key: str, timeout: float
    ) -> str | None:
        """Refund in full; None (and nothing recorded) when the charge never happened."""
        with self.ledger._write() as conn:
            charge = _get(conn, request.idempotency_key)
            if charge is None or charge["kind"] != "charge":
                return None
            existing = _get(conn, idempotency_key)
            if existing is not None:
                return str(existing["ref"])
            detail = {"charge": charge["ref"], "amount": charge["detail"]["amount"]}
            return str(
                _put(conn, "refund", request.saga_id, idempotency_key, _random_ref("re_"), detail)["ref"]
            )


class SandboxMessaging(Messaging):
    """Twilio test credentials: +15005550001 is invalid, any other E.164 number is delivered."""

    def __init__(self, ledger: SandboxLedger) -> None:
        self.ledger = ledger

    def send(
        self, *, saga_id: str, idempotency_key: str, to: str, body: str, kind: str, timeout: float
    ) -> str:
        """Send once per key (real Twilio would not dedup); only the last four digits are kept."""
        if to == INVALID_NUMBER or not _E164.fullmatch(to):
            # The number itself stays out of the message: errors end up in logs.
            raise InvalidPhoneNumber("twilio", "21211", "The 'To' number is not a valid phone number.")
        detail = {"kind": kind, "body": body, "to_last4": to[-4:]}
        entry, _ = self.ledger.insert_once(
            kind="message",
            saga_id=saga_id,
            idempotency_key=idempotency_key,
            ref="SM" + secrets.token_hex(16),
            detail=detail,
        )
        return str(entry["ref"])

    def sent(self, *, idempotency_key: str, to: str, timeout: float) -> str | None:
        """Lets a retry find out whether the message went before it sends again."""
        entry = self.ledger.find(idempotency_key)
        return None if entry is None or entry["kind"] != "message" else str(entry["ref"])


class SandboxCalendar(Calendar):
    """Google Calendar with client-chosen event ids: a second create of the same id is a 409, i.e. done."""

    def __init__(self, ledger: SandboxLedger) -> None:
        self.ledger = ledger

    def create_event(
        self, *, saga_id: str, event_id: str, summary: str, start: datetime, minutes: int, timeout: float
    ) -> str:
        """Create once; after a delete the id stays taken (as in Google), so the event is not revived."""
        detail = {"summary": summary, "start": start.isoformat(), "minutes": minutes}
        self.ledger.insert_once(
            kind="event_created",
            saga_id=saga_id,
            idempotency_key=f"event:{event_id}:created",
            ref=event_id,
            detail=detail,
        )
        return event_id

    def delete_event(self, *, event_id: str, timeout: float) -> bool:
        """True only for the call that actually deleted it, so a compensation can tell."""
        with self.ledger._write() as conn:
            created = _get(conn, f"event:{event_id}:created")
            if created is None or _get(conn, f"event:{event_id}:deleted") is not None:
                return False
            _put(conn, "event_deleted", created["saga_id"], f"event:{event_id}:deleted", event_id, {})
            return True
