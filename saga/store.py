"""Reads and writes of saga state in Redis hashes and streams.

Writers take a pipeline that is already in MULTI, so the caller can commit a
state change together with the enqueue of the job that follows from it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from redis import Redis, WatchError
from redis.client import Pipeline
from redis.exceptions import NoScriptError

from saga import keys
from saga.definition import Saga
from saga.errors import SagaNotFound
from saga.records import SagaRecord, StepRecord, Transition
from saga.status import SagaStatus, StepStatus

T = TypeVar("T")
Fields = Mapping[str, Any]
Raw = dict[bytes, bytes]


def iso(epoch: float) -> str:
    """UTC timestamp with milliseconds, the one format every record uses."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch(stamp: str) -> float:
    """The inverse of `iso`."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# Upper bounds (seconds) of the step duration histogram's buckets, as Prometheus would have them.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


# Both hashes in one round trip (inside WATCH, where a pipeline cannot batch reads).
_READ_PAIR = (
    "return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('GET', KEYS[3])}"
)


# A finished saga's history changes only by an operator's hand: keep it as one JSON
# string (appended to, if the saga was reopened). A stream preallocates a 4 KB node,
# more than everything else a finished saga keeps.
_ARCHIVE = """
local out = {}
local earlier = redis.call('GET', KEYS[2])
if earlier then out = cjson.decode(earlier) end
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local fields = {}
  for j = 1, #entry[2], 2 do fields[entry[2][j]] = entry[2][j + 1] end
  out[#out + 1] = {entry[1], fields}
end
redis.call('SET', KEYS[2], cjson.encode(out), 'EX', ARGV[1])
redis.call('DEL', KEYS[1])
return #out
"""


# The common claim, a step's next action attempt, checked and written in one call: the
# moves and fields `Settlement.claimed` writes for it. Anything else (a stale attempt,
# a gate's timeout, a compensation) answers 0 and takes the general WATCH path.
_CLAIM_ACTION = """
local header = redis.call('HGETALL', KEYS[1])
local step = redis.call('HGETALL', KEYS[2])
local data = redis.call('GET', KEYS[3])
local h, s = {}, {}
for i = 1, #header, 2 do h[header[i]] = header[i + 1] end
for i = 1, #step, 2 do s[step[i]] = step[i + 1] end
local attempt = tonumber(ARGV[1])
if h['status'] ~= 'running' or s['status'] ~= 'pending' or tonumber(s['attempts'] or '0') ~= attempt - 1 then
  return {0, header, step, data}
end
if attempt == 1 then
  redis.call('HSET', KEYS[2], 'status', 'running', 'attempts', ARGV[1], 'started_at', ARGV[2])
else
  redis.call('HSET', KEYS[2], 'status', 'running', 'attempts', ARGV[1])
end
if s['next_attempt_at'] then redis.call('HDEL', KEYS[2], 'next_attempt_at') end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'to', 'running', 'step', s['name'],
  'direction', 'do', 'attempt', ARGV[1], 'from', 'pending', 'detail', 'attempt started')
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
redis.call('ZADD', KEYS[5], 'XX', ARGV[3], ARGV[4])
return {1, header, step, data}
"""


# The common settle, an action that succeeded with a next step to start: the writes of
# `Settlement.success` for it, if the attempt still owns its step and nobody asked to
# cancel. The next step's job is queued in the same MULTI just before this call; on a
# refusal the call takes that job back, and the WATCH path decides what follows.
_ADVANCE = """
local saga = redis.call('HMGET', KEYS[1], 'status', 'cancel')
local step = redis.call('HMGET', KEYS[2], 'status', 'attempts')
if saga[1] ~= 'running' or saga[2] or step[1] ~= 'running' or step[2] ~= ARGV[1] then
  redis.call('DEL', KEYS[6])
  redis.call('LREM', KEYS[7], 1, ARGV[12])
  return 0
end
redis.call('HINCRBY', KEYS[5], ARGV[9], 1)
redis.call('HINCRBY', KEYS[5], ARGV[10], ARGV[11])
redis.call('HSET', KEYS[2], 'status', 'succeeded', 'ref', ARGV[3], 'finished_at', ARGV[2])
if ARGV[3] == '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'to', 'succeeded', 'step', ARGV[7],
    'direction', 'do', 'attempt', ARGV[1], 'from', 'running')
else
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'to', 'succeeded', 'step', ARGV[7],
    'direction', 'do', 'attempt', ARGV[1], 'from', 'running', 'detail', string.sub(ARGV[3], 1, 500))
end
redis.call('HSET', KEYS[1], 'step', ARGV[8], 'updated_at', ARGV[2])
redis.call('ZADD', KEYS[4], 'XX', ARGV[4], ARGV[5])
return 1
"""


def _encoded(fields: Mapping[str, Any]) -> Raw:
    """A hash as Redis would return it."""
    return {name.encode(): str(value).encode() for name, value in fields.items()}


def _histogram_fields(step: str, direction: str, outcome: str, seconds: float) -> tuple[str, str, int]:
    """(bucket field, sum field, microseconds) of one observation in `keys.STEP_SECONDS`."""
    bucket = next((str(b) for b in DURATION_BUCKETS if seconds <= b), "+Inf")
    series = f"{step}|{direction}|{outcome}"
    return f"{series}|{bucket}", f"{series}|sum_us", round(seconds * 1e6)  # an integer: cheaper


def _pairs(flat: list[bytes]) -> Raw:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _saga_and_step(
    saga_id: str, header: list[bytes], step: list[bytes], data: bytes | None
) -> tuple[Raw, StepRecord | None, dict[str, Any]]:
    """Decode what the read scripts answer: flat saga hash, flat step hash, input JSON."""
    step_raw = _pairs(step)
    record = StepRecord.from_hash(saga_id, step_raw) if step_raw else None
    return _pairs(header), record, json.loads(data) if data else {}


class SagaStore:
    """One saga's hashes, history stream and the active index; nothing else."""

    def __init__(self, redis: Redis, clock: Callable[[], float] = time.time, history_limit: int = 1000):
        self.redis = redis
        self.clock = clock
        self.history_limit = history_limit
        self._read_pair = redis.register_script(_READ_PAIR)
        self._claim_action = redis.register_script(_CLAIM_ACTION)

    def now(self) -> str:
        """The current time in record format."""
        return iso(self.clock())

    def transact(self, watch: Sequence[str], body: Callable[[Pipeline], T]) -> T:
        """Run `body` under WATCH until it commits without interference.

        `body` reads through the pipeline (immediate mode), then calls
        `pipe.multi()` and queues its writes; if it returns before `multi()`,
        nothing is written.
        """
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    if watch:
                        pipe.watch(*watch)
                    result = body(pipe)
                    pipe.execute()
                    return result
                except WatchError:
                    continue

    # -- reads -------------------------------------------------------------

    def load(self, saga_id: str) -> SagaRecord:
        """The whole saga with its steps and history; raises `SagaNotFound`."""
        raw = cast(Raw, self.redis.hgetall(keys.saga(saga_id)))
        if not raw:
            raise SagaNotFound(saga_id)
        names: list[str] = json.loads(raw[b"steps"])
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(keys.step(saga_id, name))
            pipe.xrange(keys.history(saga_id))
            pipe.get(keys.history_log(saga_id))
            pipe.get(keys.data(saga_id))
            *step_hashes, entries, log, data = pipe.execute()
        steps = [StepRecord.from_hash(saga_id, h) for h in step_hashes if h]
        if log:  # finished once: the archived history, then what followed an operator's reopening
            archived = [
                (i.encode(), {k.encode(): v.encode() for k, v in f.items()}) for i, f in json.loads(log)
            ]
            entries = archived + entries
        history = [Transition.from_entry(entry_id, fields) for entry_id, fields in entries]
        return SagaRecord.from_hashes(saga_id, raw, json.loads(data) if data else {}, steps, history)

    def exists(self, saga_id: str) -> bool:
        """True while the saga's record is kept."""
        return bool(self.redis.exists(keys.saga(saga_id)))

    def step_ref(self, saga_id: str, name: str) -> str | None:
        """The provider id recorded for step `name`, or None."""
        raw = cast(bytes | None, self.redis.hget(keys.step(saga_id, name), "ref"))
        return raw.decode() if raw else None

    def read_saga_and_step(
        self, pipe: Pipeline, saga_id: str, name: str
    ) -> tuple[Raw, StepRecord | None, dict[str, Any]]:
        """The saga hash, one step record and the input data, inside a transaction, in one round trip."""
        names = (keys.saga(saga_id), keys.step(saga_id, name), keys.data(saga_id))
        try:  # EVALSHA straight away: a Script object on a pipeline first asks SCRIPT EXISTS
            header, step, data = pipe.evalsha(self._read_pair.sha, len(names), *names)
        except NoScriptError:  # Redis restarted since: load it once more
            self.redis.script_load(_READ_PAIR)
            header, step, data = pipe.evalsha(self._read_pair.sha, len(names), *names)
        return _saga_and_step(saga_id, header, step, data)

    def claim_action(self, pipe: Pipeline, saga_id: str, step: str, attempt: int, check_at: float) -> None:
        """Queue the one-call claim of action attempt `attempt`; `claimed_action` reads its answer.

        EVALSHA: inside MULTI a script Redis lost (a restart) fails only at EXEC, as a
        NoScriptError in the answer; `claimed_action` then loads it for the next claim.
        """
        names = (
            keys.saga(saga_id),
            keys.step(saga_id, step),
            keys.data(saga_id),
            keys.history(saga_id),
            keys.ACTIVE,
        )
        args = (attempt, self.now(), check_at, saga_id, self.history_limit)
        pipe.evalsha(self._claim_action.sha, len(names), *names, *args)

    def claimed_action(
        self, saga_id: str, answer: list[Any] | Exception
    ) -> tuple[bool, Raw, StepRecord | None, dict[str, Any]]:
        """(claimed, saga hash, step record and input data as they were before the claim)."""
        if isinstance(answer, NoScriptError):
            self.redis.script_load(_CLAIM_ACTION)
            return False, {}, None, {}
        if isinstance(answer, Exception):
            raise answer
        ok, header, step, data = answer
        return (bool(ok), *_saga_and_step(saga_id, header, step, data))

    # -- writes (pipeline in MULTI) ----------------------------------------

    def create(
        self,
        pipe: Pipeline,
        saga_id: str,
        saga: Saga,
        data: Mapping[str, Any],
        check_at: float,
        *,
        reference: str | None = None,
        callback_url: str | None = None,
        reference_ttl: int = 0,
    ) -> SagaRecord:
        """Write a new saga in `running` with every step `pending`; see `update_saga` for `check_at`.

        `reference` is the caller's own id for the run (the voice agent's call id),
        indexed for search; `callback_url` is told the outcome when the saga ends.
        Returns the record as written, so a caller can answer without reading it back.
        """
        created = self.clock()
        at = iso(created)
        header = {
            "name": saga.name,
            "status": SagaStatus.RUNNING.value,
            "steps": json.dumps([s.name for s in saga.steps]),
            "step": saga.steps[0].name,
            "created_at": at,
            "updated_at": at,
        }
        if reference:
            header["reference"] = reference
            pipe.zadd(keys.by_reference(reference), {saga_id: created})
            if reference_ttl:
                pipe.expire(keys.by_reference(reference), reference_ttl)
        if callback_url:
            header["callback_url"] = callback_url
        steps = [
            {
                "name": s.name,
                "compensation_name": s.compensation_name,
                "index": i,
                "status": StepStatus.PENDING.value,
            }
            for i, s in enumerate(saga.steps)
        ]
        pipe.hset(keys.saga(saga_id), mapping=cast(Any, header))
        pipe.set(keys.data(saga_id), json.dumps(data, separators=(",", ":")))
        for step in steps:
            pipe.hset(keys.step(saga_id, str(step["name"])), mapping=cast(Any, step))
        self.record(pipe, saga_id, source="", target=SagaStatus.RUNNING.value, detail="saga started")
        pipe.zadd(keys.ACTIVE, {saga_id: check_at})
        self.index(pipe, saga_id, None, SagaStatus.RUNNING, created)
        millis = int(created * 1000)
        started = Transition.from_entry(
            f"{millis}-0".encode(), {b"to": b"running", b"detail": b"saga started"}
        )
        return SagaRecord.from_hashes(
            saga_id,
            _encoded(header),
            dict(data),
            [StepRecord.from_hash(saga_id, _encoded(step)) for step in steps],
            [started],
        )

    def update_saga(
        self, pipe: Pipeline, saga_id: str, fields: Fields, check_at: float | None = None
    ) -> None:
        """Change saga fields; `check_at` is when the saga should next have moved.

        The reconciler looks at sagas whose `check_at` has passed: by then a
        healthy worker would have recorded the next transition.
        """
        pipe.hset(keys.saga(saga_id), mapping=cast(Any, {**fields, "updated_at": self.now()}))
        if check_at is not None:
            pipe.zadd(keys.ACTIVE, {saga_id: check_at}, xx=True)

    @staticmethod
    def index(
        pipe: Pipeline, saga_id: str, source: SagaStatus | None, target: SagaStatus, created: float
    ) -> None:
        """Move the saga between the status indexes, and count that it reached `target`."""
        if source is not None:
            pipe.zrem(keys.by_status(source), saga_id)
        pipe.zadd(keys.by_status(target), {saga_id: created})
        pipe.hincrby(keys.METRICS, f"sagas:{target.value}", 1)

    @staticmethod
    def observe(pipe: Pipeline, step: str, direction: str, outcome: str, seconds: float) -> None:
        """Count one attempt's duration into the histogram of its step, direction and outcome."""
        bucket, total, micros = _histogram_fields(step, direction, outcome, seconds)
        pipe.hincrby(keys.STEP_SECONDS, bucket, 1)
        pipe.hincrby(keys.STEP_SECONDS, total, micros)

    def advance(
        self,
        pipe: Pipeline,
        saga_id: str,
        step: str,
        attempt: int,
        ref: str | None,
        seconds: float,
        following: str,
        next_job: tuple[str, str, str],
        check_at: float,
    ) -> None:
        """Queue the one-call settle of a succeeded action whose saga goes on with `following`.

        `next_job` is (id, hash key, queue key) of the job queued just before in `pipe`,
        which the call takes back if it refuses. Its answer is 1 when it applied.
        """
        job_id, job_key, queue_key = next_job
        bucket, total, micros = _histogram_fields(step, "do", "succeeded", seconds)
        names = (
            keys.saga(saga_id),
            keys.step(saga_id, step),
            keys.history(saga_id),
            keys.ACTIVE,
            keys.STEP_SECONDS,
            job_key,
            queue_key,
        )
        args = (attempt, self.now(), ref or "", check_at, saga_id, self.history_limit, step, following)
        # EVAL, not EVALSHA: a script Redis lost would fail only at EXEC, after the next job
        # was queued in the same MULTI, and nothing would take that job back.
        pipe.eval(_ADVANCE, len(names), *names, *args, bucket, total, micros, job_id)

    def recheck_at(self, saga_id: str, check_at: float) -> None:
        """Push back when an unfinished saga is next looked at (its job is queued, not lost)."""
        self.redis.zadd(keys.ACTIVE, {saga_id: check_at}, xx=True)

    def due(self, now: float, limit: int) -> list[str]:
        """Unfinished sagas whose `check_at` has passed, oldest first."""
        raw = self.redis.zrangebyscore(keys.ACTIVE, "-inf", now, start=0, num=limit)
        return [item.decode() for item in cast(list[bytes], raw)]

    @staticmethod
    def update_step(pipe: Pipeline, saga_id: str, name: str, fields: Fields) -> None:
        """Change step fields."""
        pipe.hset(keys.step(saga_id, name), mapping=cast(Any, fields))

    @staticmethod
    def clear_saga_fields(pipe: Pipeline, saga_id: str, *fields: str) -> None:
        """Remove saga fields that no longer apply (an operator's request once it is carried out)."""
        pipe.hdel(keys.saga(saga_id), *fields)

    @staticmethod
    def clear_step_fields(pipe: Pipeline, saga_id: str, name: str, *fields: str) -> None:
        """Remove fields that no longer apply (a retry time once the retry started)."""
        pipe.hdel(keys.step(saga_id, name), *fields)

    def record(
        self,
        pipe: Pipeline,
        saga_id: str,
        *,
        source: str,
        target: str,
        step: str = "",
        direction: str = "",
        attempt: int = 0,
        detail: str = "",
    ) -> None:
        """Append one transition to the saga's history stream."""
        # The entry id carries the time; empty fields are left out.
        fields = {
            "step": step,
            "direction": direction,
            "attempt": attempt,
            "from": source,
            "detail": detail[:500],
        }
        entry = {"to": target, **{name: value for name, value in fields.items() if value}}
        pipe.xadd(keys.history(saga_id), cast(Any, entry), maxlen=self.history_limit, approximate=True)

    def expire(
        self, pipe: Pipeline, saga_id: str, step_names: Sequence[str], retention: int, count: bool = True
    ) -> None:
        """Archive a finished saga's history, let its keys expire after `retention` seconds,
        drop it from the reconciler's index and (with `count`) count it in this minute's
        throughput (after the final history entry, in the same MULTI)."""
        # EVAL, not EVALSHA: inside MULTI a missing script would only fail at EXEC.
        pipe.eval(_ARCHIVE, 2, keys.history(saga_id), keys.history_log(saga_id), retention)
        for key in keys.all_of_saga(saga_id, step_names):
            pipe.expire(key, retention)
        pipe.zrem(keys.ACTIVE, saga_id)
        if count:
            minute = keys.finished_in_minute(int(self.clock() // 60))
            pipe.incr(minute)
            pipe.expire(minute, 2 * 3600)

    def reopen(self, pipe: Pipeline, saga_id: str, step_names: Sequence[str], check_at: float) -> None:
        """Keep a finished saga that an operator set moving again, and watch it like a new one."""
        for key in keys.all_of_saga(saga_id, step_names):
            pipe.persist(key)
        pipe.zadd(keys.ACTIVE, {saga_id: check_at})
