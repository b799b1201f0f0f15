"""How saga attempts become RQ jobs: one job per attempt, JSON arguments, readable names.

Arguments are only the saga id and step name, so nothing personal reaches RQ or
rq-dashboard; the attempt number (the fencing token) travels in `job.meta`.
"""

from __future__ import annotations

import calendar
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq import Callback, Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from saga import keys
from saga.definition import Direction, Step

DO_STEP = "saga.entrypoints.do_step"
UNDO_STEP = "saga.entrypoints.undo_step"
ON_FAILURE = "saga.entrypoints.on_job_failure"
# Where the web app's operator page shows a saga (app/operator.py serves it; a test keeps the two
# in step). It ends every job description, so rq-dashboard leads straight to the saga's timeline.
OPERATOR_PAGE = "/ops/sagas/{saga_id}"
DELIVER_CALLBACK = "saga.entrypoints.deliver_callback"
# RQ's hard limit on one delivery attempt: well above CALLBACK_TIMEOUT_SECONDS (at most 60),
# so only a receiver that trickles its answer past the HTTP timeout meets it.
CALLBACK_JOB_TIMEOUT = 120


class StepQueue:
    """Enqueues attempts inside the caller's transaction."""

    def __init__(
        self, redis: Redis, name: str, *, result_ttl: int, failure_ttl: int, timeout_grace: int = 15
    ) -> None:
        self.rq = Queue(name, connection=redis, serializer=JSONSerializer)
        self.result_ttl = result_ttl
        self.failure_ttl = failure_ttl
        # RQ's own hard limit sits this far above the engine's step timeout, so the
        # engine's deadline fires first and RQ's only catches an engine stuck on Redis.
        self.timeout_grace = timeout_grace

    def enqueue(
        self,
        pipe: Pipeline,
        *,
        saga_name: str,
        saga_id: str,
        step: Step,
        direction: str,
        attempt: int,
        delay: float = 0.0,
        unschedule: bool = False,
    ) -> str:
        """Queue one attempt (after `delay` seconds, via RQ's scheduler) and return its job id.

        `unschedule` first takes the job out of RQ's scheduled registry, for a retry
        the reconciler moves to the queue itself.
        """
        label = step.name if direction == Direction.DO else step.compensation_name
        job_id = keys.job_id(saga_id, step.name, direction, attempt)
        options: dict[str, Any] = {
            "job_id": job_id,
            "description": (
                f"{saga_name}.{label} saga={saga_id} attempt={attempt} "
                + OPERATOR_PAGE.format(saga_id=saga_id)
            ),
            "job_timeout": math.ceil(step.timeout) + self.timeout_grace,
            "result_ttl": self.result_ttl,
            "failure_ttl": self.failure_ttl,
            "meta": {"saga_id": saga_id, "step": step.name, "direction": direction, "attempt": attempt},
            "on_failure": Callback(ON_FAILURE),
            "pipeline": pipe,
        }
        func = DO_STEP if direction == Direction.DO else UNDO_STEP
        if unschedule:
            pipe.zrem(self.rq.scheduled_job_registry.key, job_id)
        self._put(pipe, func, (saga_id, step.name), delay, options)
        return job_id

    def _put(
        self, pipe: Pipeline, func: str, args: tuple[Any, ...], delay: float, options: dict[str, Any]
    ) -> None:
        """Enqueue now, or after `delay` seconds (RQ's scheduler moves it then), all inside `pipe`.

        Delayed jobs are written here rather than with `Queue.enqueue_at`: in
        RQ 2.12, `ScheduledJobRegistry.schedule` ignores the pipeline it is given and
        adds the job to the registry at once, outside the caller's transaction: a
        transaction retried after a WATCH conflict, or one that also unschedules the
        same id, would leave the registry wrong.
        """
        if delay <= 0:
            self.rq.enqueue(func, *args, **options)
            return
        job = self.rq.create_job(
            func,
            args=args,
            status=JobStatus.SCHEDULED,
            timeout=options["job_timeout"],
            result_ttl=options["result_ttl"],
            failure_ttl=options["failure_ttl"],
            description=options["description"],
            job_id=options["job_id"],
            meta=options["meta"],
            on_failure=options["on_failure"],
        )
        pipe.sadd(self.rq.redis_queues_keys, self.rq.key)
        job.set_status(JobStatus.SCHEDULED, pipeline=pipe)
        job.save(pipeline=pipe)
        due = datetime.now(UTC) + timedelta(seconds=delay)
        pipe.zadd(self.rq.scheduled_job_registry.key, {job.id: calendar.timegm(due.utctimetuple())})

    def job_key(self, job_id: str) -> str:
        """The Redis key of a job's hash (RQ's layout)."""
        return self.rq.job_class.key_for(job_id)

    def enqueue_callback(self, pipe: Pipeline, saga_id: str, attempt: int, delay: float = 0.0) -> str:
        """Queue one delivery attempt of the saga's completion callback; return its job id.

        The id is deterministic, so enqueuing the same attempt twice leaves one job.
        """
        job_id = keys.callback_job_id(saga_id, attempt)
        options: dict[str, Any] = {
            "job_id": job_id,
            "description": f"callback saga={saga_id} attempt={attempt}",
            "job_timeout": CALLBACK_JOB_TIMEOUT,
            "result_ttl": self.result_ttl,
            "failure_ttl": self.failure_ttl,
            "meta": {"saga_id": saga_id, "callback_attempt": attempt},
            "on_failure": Callback(ON_FAILURE),
            "pipeline": pipe,
        }
        self._put(pipe, DELIVER_CALLBACK, (saga_id, attempt), delay, options)
        return job_id

    def waiting(self, job_id: str, overdue_after: float) -> bool:
        """True while the job will still run: really in the queue, or scheduled and not overdue.

        A scheduled job more than `overdue_after` seconds past its time counts as
        lost: the worker holding RQ's scheduler lock may have died, and the next
        one takes the lock only minutes later.
        """
        try:
            job = Job.fetch(job_id, connection=self.rq.connection, serializer=JSONSerializer)
        except NoSuchJobError:
            return False
        status = job.get_status(refresh=False)
        if status == JobStatus.SCHEDULED:
            try:
                due = self.rq.scheduled_job_registry.get_scheduled_time(job_id)
            except NoSuchJobError:
                return False
            return (datetime.now(UTC) - due).total_seconds() < overdue_after
        # A job hash can say "queued" after its id left the list (a worker died dequeuing it).
        return status == JobStatus.QUEUED and self.rq.connection.lpos(self.rq.key, job_id) is not None
