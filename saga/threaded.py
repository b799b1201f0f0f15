"""A worker that runs many saga steps at once in one process, on threads.

Saga steps mostly wait on Stripe, Twilio and Google, so one process can keep
dozens in flight. RQ has no such worker (rq/rq#1804), so this one is built on
RQ's public pieces: its main loop dequeues (one job per free slot), a bounded
pool of daemon threads runs the jobs, and each job is recorded as started,
finished or failed in RQ's registries, so rq-dashboard shows it as usual.

What it does differently from the stock lifecycle, and why:
- no fork and no SIGALRM: the engine bounds every step with its own deadline;
- heartbeats at most every few seconds, pipelined, instead of several round
  trips per job; the started/finished bookkeeping is one pipeline each.

On SIGTERM it stops dequeuing, lets running steps finish for `shutdown_grace`
seconds, and hands back the rest: each is recorded failed with an unknown
outcome (fenced, so the late thread cannot overwrite it) and retried elsewhere
with the same idempotency key. A SIGKILLed process recovers like any other
crash: the reconciler drives its sagas on.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

from redis.client import Pipeline
from rq import Queue, Worker
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty
from rq.utils import now, utcformat

from saga import entrypoints
from saga.engine import SagaEngine
from saga.errors import AttemptFailed
from saga.outcome import redact
from saga.worker import MAINTENANCE_EVERY, die_with_worker

HEARTBEAT_EVERY = 5.0  # seconds between worker heartbeats (RQ's worker TTL is minutes)


class NoDeathPenalty(BaseDeathPenalty):
    """RQ's timeouts use SIGALRM, which only the main thread may set; the engine times steps itself."""

    def setup_death_penalty(self) -> None:
        return None

    def cancel_death_penalty(self) -> None:
        return None


class ThreadedSagaWorker(Worker):
    """Runs up to `concurrency` jobs at once in this process."""

    death_penalty_class = NoDeathPenalty

    def __init__(
        self,
        engine: SagaEngine,
        queues: Sequence[Queue] | None = None,
        *,
        concurrency: int = 32,
        shutdown_grace: float = 25.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("serializer", JSONSerializer)
        kwargs.setdefault("maintenance_interval", MAINTENANCE_EVERY)
        super().__init__(queues or [engine.queue.rq], connection=engine.redis, **kwargs)
        self.engine = engine
        self.concurrency = concurrency
        self.shutdown_grace = shutdown_grace
        self._slots = threading.BoundedSemaphore(concurrency)
        self._tasks: queue.Queue[tuple[Job, Queue]] = queue.Queue()
        self._running: dict[str, Job] = {}
        self._changed = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._beat_at = 0.0
        self._suspension_checked_at = 0.0
        entrypoints.bind(engine)
        die_with_worker(self)

    # -- RQ's main loop, reused: dequeue one job per free slot ---------------------------

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """Wait for a free slot, then dequeue, in short waits so a stop request is seen at once.

        In burst mode an empty queue ends the loop only when no running job can
        enqueue a next step any more.
        """
        while not self._slots.acquire(timeout=HEARTBEAT_EVERY):
            self._check_stop()
            self.heartbeat()
        try:
            result = self._dequeue(timeout, max_idle_time)
        except BaseException:
            self._slots.release()
            raise
        if result is None:
            self._slots.release()
        return result

    def _dequeue(self, timeout: int | None, max_idle_time: int | None) -> tuple[Job, Queue] | None:
        idle_since = time.monotonic()
        wait = None if timeout is None else max(1, min(timeout, int(HEARTBEAT_EVERY)))
        while True:
            self._check_stop()
            # RQ's loop turns a signal that lands in a socket read into a retried
            # ConnectionError; short waits bound how long such a stop could go unseen.
            result = super().dequeue_job_and_maintain_ttl(wait, wait)
            if result is not None:
                return result
            if timeout is None:
                with self._changed:
                    if not self._running:
                        return None
                    self._changed.wait(timeout=HEARTBEAT_EVERY)
            elif max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
                return None

    def _check_stop(self) -> None:
        if self._stop_requested:
            raise StopRequested()

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Hand the job to a pool thread and return to dequeuing."""
        if not self._threads:
            for n in range(self.concurrency):
                thread = threading.Thread(target=self._serve, name=f"saga-worker-{n}", daemon=True)
                thread.start()
                self._threads.append(thread)
        with self._changed:
            self._running[job.id] = job
        self._tasks.put((job, queue))

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """At most every few seconds: RQ calls this several times per job."""
        if pipeline is None and time.monotonic() - self._beat_at < HEARTBEAT_EVERY:
            return
        self._beat_at = time.monotonic()
        super().heartbeat(timeout, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        """At most every few seconds: RQ asks Redis (with a heartbeat) before every job.

        `rq suspend` then takes effect within `HEARTBEAT_EVERY` seconds instead of at once.
        """
        if time.monotonic() - self._suspension_checked_at < HEARTBEAT_EVERY:
            return
        self._suspension_checked_at = time.monotonic()
        super().check_for_suspension(burst)

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """Write the state only when it changes."""
        if state != getattr(self, "_state", None) or pipeline is not None:
            super().set_state(state, pipeline)

    # -- one job on a pool thread --------------------------------------------------------

    def _serve(self) -> None:
        entrypoints.bind(self.engine)  # a new thread starts with an empty context
        while True:
            job, queue = self._tasks.get()
            try:
                self._perform(job, queue)
            except Exception:  # bookkeeping failed (Redis down); the reconciler repairs the saga
                self.log.exception("job %s: could not record its outcome", job.id)
            finally:
                with self._changed:
                    self._running.pop(job.id, None)
                    self._changed.notify_all()
                self._slots.release()

    def _perform(self, job: Job, queue: Queue) -> None:
        meta = job.meta
        if {"saga_id", "step", "direction", "attempt"} <= meta.keys():
            bookkeeping = RQBookkeeping(self, job)
            try:
                self.engine.run(
                    meta["saga_id"], meta["step"], meta["direction"], int(meta["attempt"]), bookkeeping
                )
            except AttemptFailed:
                pass  # recorded, with the job's failure, in the engine's transaction
            except Exception:  # the engine could not record it (Redis down): unknown outcome
                self.log.exception("job %s", job.id)
                self.engine.report_failure(
                    meta["saga_id"], meta["step"], meta["direction"], int(meta["attempt"]), "worker error"
                )
            if not bookkeeping.closed:  # a stale attempt: nothing was claimed, close the job apart
                with self.connection.pipeline() as pipe:
                    bookkeeping.finished(pipe)
                    pipe.execute()
            return
        self._perform_plain(job)

    def _perform_plain(self, job: Job) -> None:
        """Any other job (the periodic reconciler): RQ's lifecycle in two pipelines."""
        bookkeeping = RQBookkeeping(self, job)
        with self.connection.pipeline() as pipe:
            bookkeeping.started(pipe)
            pipe.execute()
        try:
            job.perform()
        except Exception:
            reason = redact(traceback.format_exc())
            try:
                job.execute_failure_callback(self.death_penalty_class, *sys.exc_info())
            except Exception:
                self.log.exception("job %s: failure callback raised", job.id)
            with self.connection.pipeline() as pipe:
                bookkeeping.failed(pipe, reason)
                pipe.execute()
            return
        with self.connection.pipeline() as pipe:
            bookkeeping.finished(pipe)
            pipe.execute()

    # -- shutdown ------------------------------------------------------------------------

    def request_stop(self, signum: int, frame: Any) -> None:
        """SIGTERM/SIGINT: stop dequeuing now; `teardown` drains the running steps."""
        self._stop_requested = True
        raise StopRequested()

    def teardown(self) -> None:
        """Let running steps finish within the grace, hand back the rest, then deregister."""
        deadline = time.monotonic() + self.shutdown_grace
        with self._changed:
            while self._running and time.monotonic() < deadline:
                self._changed.wait(timeout=deadline - time.monotonic())
            left = list(self._running.values())
        for job in left:
            meta = job.meta
            if {"saga_id", "step", "direction", "attempt"} <= meta.keys():
                reason = f"worker shut down mid-step ({self.shutdown_grace:g}s grace); outcome unknown"
                self.engine.report_failure(
                    meta["saga_id"], meta["step"], meta["direction"], int(meta["attempt"]), reason
                )
                self.log.warning("handed back %s", job.id)
        super().teardown()


class RQBookkeeping:
    """RQ's records of one job (execution, status, registries, result), written into a given pipeline."""

    def __init__(self, worker: ThreadedSagaWorker, job: Job) -> None:
        self.worker = worker
        self.job = job
        self.execution: Execution | None = None
        self.closed = False

    def started(self, pipe: Pipeline) -> None:
        """The job is running: visible in the started registry and on its page."""
        ttl = int(self.job.timeout or 180) + 60
        self.execution = Execution.create(self.job, ttl, pipe, worker_name=self.worker.name)
        self.job.prepare_for_execution(self.worker.name, pipe)
        self._dequeued(pipe)

    def _dequeued(self, pipe: Pipeline) -> None:
        """Take the job off RQ's intermediate list, where dequeuing parked it, as RQ's own
        lifecycle does. Left there, it would wait for RQ's periodic cleanup, which
        fetches every parked job one by one."""
        queue_key = Queue.redis_queue_namespace_prefix + self.job.origin
        pipe.lrem(IntermediateQueue.get_intermediate_queue_key(queue_key), 1, self.job.id)

    def finished(self, pipe: Pipeline) -> None:
        """The job is done: finished registry and status for `result_ttl`, or gone at once with 0.

        Written directly rather than through `Job._handle_success`: saga jobs return
        nothing, so RQ's per-job result stream (about 4 KB each) holds nothing of
        use, and its delete path for a zero TTL reads the job back first.
        """
        job, execution = self.job, self.execution
        if execution is None:  # never started: a stale attempt, or a gate's timeout
            self._dequeued(pipe)
        job._status = JobStatus.FINISHED
        job.ended_at = now()
        result_ttl = job.get_result_ttl(self.worker.default_result_ttl)
        if execution is not None:
            execution.delete(job, pipe)
        if result_ttl == 0:
            pipe.delete(job.key, job.dependents_key)
        else:
            pipe.hset(
                job.key, mapping={"status": JobStatus.FINISHED.value, "ended_at": utcformat(job.ended_at)}
            )
            job.finished_job_registry.add(job, result_ttl, pipe)
            job.cleanup(result_ttl, pipeline=pipe)
        self.worker.increment_successful_job_count(pipe)
        self.closed = True

    def failed(self, pipe: Pipeline, reason: str) -> None:
        """The job failed; it goes to the failed registry with `reason`."""
        job, execution = self.job, self.execution
        if execution is None:
            self._dequeued(pipe)
        job._status = JobStatus.FAILED
        job.ended_at = now()
        job.set_status(JobStatus.FAILED, pipeline=pipe)
        started = execution.created_at if execution else job.ended_at
        job._handle_failure(
            reason, pipe, self.worker.name, execution.id if execution else None, started, job.ended_at
        )
        if execution is not None:
            execution.delete(job, pipe)
        self.worker.increment_failed_job_count(pipe)
        self.closed = True
