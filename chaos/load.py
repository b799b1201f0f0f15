"""The load: bookings reproducible from a seed, and their submission over HTTP as the voice agent does it.

Why this shape: outcomes must be mixed and the races real. Slots come from a small
pool (and some bookings follow one for the same slot at once), so two sagas do
compete for a slot and the loser must end compensated with nothing charged. Some
cards are declined and some phone numbers invalid (permanent failures from the
data), some bookings are posted twice with one Idempotency-Key, concurrently. A
5xx, a 429 or a connection error (Redis restarting) is retried with the same key, which
is what makes retrying safe; a booking that never got an answer is not counted.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from chaos.invariants import Slot

DECLINED_CARD = "pm_card_chargeDeclined"
GOOD_CARD = "pm_card_visa"
INVALID_PHONE = "+15005550001"
FIRST_START = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
DAYS_PER_RESOURCE = 4


@dataclass(frozen=True)
class Mix:
    """Shares of the bookings with each property the data controls."""

    declined: float = 0.05  # card declined: charge_card fails for good
    invalid_phone: float = 0.03  # send_sms fails for good, after a charge: a refund must follow
    twice: float = 0.03  # posted twice at once with the same Idempotency-Key
    twins: float = 0.10  # same slot as the booking just before it: a race at book_slot
    slot_ratio: float = 0.5  # distinct slots per booking


@dataclass(frozen=True)
class Booking:
    """One booking request and what the checks need to know about it."""

    index: int
    key: str  # Idempotency-Key
    body: dict[str, Any]
    slot: Slot
    twice: bool


@dataclass(frozen=True)
class Answer:
    """The API's final answer to one POST (after retries); `status` None means none came."""

    booking: Booking
    status: int | None
    saga_id: str | None
    tries: int
    error: str | None = None


def slot_pool(size: int) -> list[Slot]:
    """`size` distinct (resource, start) pairs, a few days of viewings per property."""
    return [
        (
            f"viewing-{i // DAYS_PER_RESOURCE:03d}",
            (FIRST_START + timedelta(days=i % DAYS_PER_RESOURCE)).isoformat().replace("+00:00", "Z"),
        )
        for i in range(size)
    ]


def generate(count: int, seed: int, run_id: str, mix: Mix = Mix()) -> tuple[list[Booking], list[Slot]]:
    """`count` bookings and the slot pool they draw from; the same seed gives the same data."""
    rng = random.Random(seed)
    pool = slot_pool(max(2, round(count * mix.slot_ratio)))
    bookings: list[Booking] = []
    for index in range(count):
        slot = bookings[-1].slot if bookings and rng.random() < mix.twins else rng.choice(pool)
        phone = f"+1500555{rng.randrange(10_000):04d}"
        if phone == INVALID_PHONE:
            phone = "+15005550006"  # invalid only where the mix says so
        if rng.random() < mix.invalid_phone:
            phone = INVALID_PHONE
        card = DECLINED_CARD if rng.random() < mix.declined else GOOD_CARD
        body = {
            "call_id": f"chaos-{index}",
            "slot": {"resource": slot[0], "start": slot[1], "minutes": 30},
            "customer": {"name": f"Caller {index}", "phone": phone},
            "payment": {"amount": rng.choice((2500, 4900, 9900)), "currency": "usd", "payment_method": card},
        }
        twice = rng.random() < mix.twice
        bookings.append(Booking(index, f"chaos-{run_id}-{index}", body, slot, twice))
    return bookings, pool


def post_json(
    base_url: str, path: str, body: Any, headers: dict[str, str], timeout: float
) -> tuple[int, Any]:
    """One POST with a JSON body; returns (status, decoded body or None). Raises OSError/HTTPException."""
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        return response.status, None


class Submitter:
    """Posts bookings from a small thread pool, retrying 5xx and connection errors with the same key."""

    def __init__(
        self,
        base_url: str,
        *,
        threads: int,
        stop: threading.Event,
        patience: float,
        on_answer: Callable[[Answer], None],
        request_timeout: float = 15.0,
    ) -> None:
        self.base_url = base_url
        self.threads = threads
        self.stop = stop
        self.patience = patience  # how long one booking keeps being retried
        self.on_answer = on_answer
        self.request_timeout = request_timeout

    def run(self, bookings: Sequence[Booking]) -> list[Answer]:
        """Submit every booking (the twice-posted ones right after themselves); one Answer per POST."""
        tasks = [b for booking in bookings for b in ([booking, booking] if booking.twice else [booking])]
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="chaos-submit")
        futures: list[Future[Answer]] = [pool.submit(self.submit, booking) for booking in tasks]
        try:
            return [future.result() for future in futures]
        except BaseException:
            self.stop.set()  # interrupted: running posts give up instead of retrying on
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, booking: Booking) -> Answer:
        """POST until a 2xx or 4xx, or until `patience` runs out."""
        deadline = time.monotonic() + self.patience
        delay, tries, error = 0.1, 0, ""
        while True:
            tries += 1
            try:
                status, payload = post_json(
                    self.base_url,
                    "/book",
                    booking.body,
                    {"Idempotency-Key": booking.key},
                    self.request_timeout,
                )
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if status in (200, 202) and isinstance(payload, dict) and "id" in payload:
                    answer = Answer(booking, status, str(payload["id"]), tries)
                    self.on_answer(answer)
                    return answer
                if status < 500 and status != 429:  # 429: too many requests, try again later
                    answer = Answer(booking, status, None, tries, f"HTTP {status}: {payload}")
                    self.on_answer(answer)
                    return answer
                error = f"HTTP {status}: {payload}"
            if self.stop.is_set() or time.monotonic() + delay > deadline:
                answer = Answer(booking, None, None, tries, f"no answer after {tries} tries: {error}")
                self.on_answer(answer)
                return answer
            self.stop.wait(delay)
            delay = min(1.0, delay * 2)
