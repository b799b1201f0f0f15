"""Builds this process's engine from settings: Redis client, providers, the booking saga."""

from __future__ import annotations

import logging

from redis import Redis

from config import Settings
from jobs.booking import BookingServices, booking_saga
from jobs.crashpoints import CrashPoint
from jobs.providers import configured
from jobs.providers.sandbox import SandboxLedger
from jobs.slots import SlotStore
from saga import RetryPolicy, SagaEngine
from saga.callbacks import CallbackPolicy

log = logging.getLogger(__name__)


def booking_services(settings: Settings, redis: Redis) -> BookingServices:
    """The configured providers (sandbox or live, each) with SANDBOX_FAULTS applied."""
    ledger = SandboxLedger(settings.sandbox_ledger)  # opened lazily: costs nothing when all are live
    return BookingServices(
        slots=SlotStore(redis),
        payments=configured.payments(settings, ledger),
        messaging=configured.messaging(settings, ledger),
        calendar=configured.calendar(settings, ledger),
        faults=settings.fault_plan,
    )


def callback_policy(settings: Settings) -> CallbackPolicy:
    """How completion callbacks are signed and retried; production never sends them unsigned."""
    secret = settings.callback_signing_secret
    if secret is None:
        log.warning("CALLBACK_SECRET and WEBHOOK_SECRET are not set: callbacks go out UNSIGNED")
    retry = RetryPolicy(
        max_attempts=settings.callback_max_attempts,
        initial_delay=settings.callback_initial_delay_seconds,
        max_delay=settings.callback_max_delay_seconds,
    )
    return CallbackPolicy(
        secret=secret,
        signed_only=settings.app_env == "production",
        retry=retry,
        timeout=settings.callback_timeout_seconds,
    )


def build_engine(settings: Settings, redis: Redis | None = None) -> SagaEngine:
    """The engine with the booking saga registered, configured from `settings`."""
    redis = redis or Redis.from_url(settings.redis_url, health_check_interval=30)
    retry = RetryPolicy(
        max_attempts=settings.step_max_attempts,
        initial_delay=settings.retry_initial_delay_seconds,
        max_delay=settings.retry_max_delay_seconds,
    )
    saga = booking_saga(
        booking_services(settings, redis),
        timeout=settings.step_timeout_seconds,
        retry=retry,
        capture_last=settings.stripe_mode == "live" and settings.stripe_capture_method == "manual",
        approval_above=settings.approval_above_amount,
        approval_timeout=settings.approval_timeout_seconds,
    )
    crash = settings.sandbox_crash_point
    return SagaEngine(
        redis,
        [saga],
        queue_name=settings.queue_name,
        retention=settings.retention_seconds,
        idempotency_ttl=settings.idempotency_ttl_seconds,
        result_ttl=settings.job_result_ttl_seconds,
        stall_grace=settings.stall_grace_seconds,
        rq_timeout_grace=settings.rq_timeout_grace_seconds,
        checkpoint=CrashPoint(crash, settings.sandbox_ledger.parent) if crash else None,
        callbacks=callback_policy(settings),
    )
