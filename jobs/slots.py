"""Our own slot store, in Redis: one key per (resource, start), holding the saga that booked it."""

from __future__ import annotations

import time
from datetime import datetime
from typing import cast

from redis import Redis

from saga import keys

# Delete the slot only if this saga still holds it: a late release must not free
# a slot that another saga booked in the meantime.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

HOLD_AFTER_END = 86400  # keep a booked slot a day past its end, then let Redis forget it


class SlotTaken(Exception):
    """Another saga holds this slot: a permanent failure of book_slot."""

    def __init__(self, resource: str, start: str) -> None:
        super().__init__(f"slot {resource} at {start} is already booked; offer the caller another time")


class SlotStore:
    """Atomic reserve and holder-checked release of viewing slots."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._release = redis.register_script(_RELEASE)

    def reserve(self, resource: str, start: datetime, minutes: int, saga_id: str) -> str:
        """Hold the slot for `saga_id`; a repeat by the same saga succeeds. Raises `SlotTaken`."""
        key = keys.slot(resource, start.isoformat())
        until = int(max(start.timestamp() + minutes * 60, time.time()) + HOLD_AFTER_END)
        if self.redis.set(key, saga_id, nx=True, exat=until):
            return key
        holder = cast(bytes | None, self.redis.get(key))
        if holder is not None and holder.decode() == saga_id:
            return key
        raise SlotTaken(resource, start.isoformat())

    def release(self, resource: str, start: datetime, saga_id: str) -> bool:
        """Free the slot if `saga_id` holds it; False when it does not (nothing to undo)."""
        return bool(self._release(keys=[keys.slot(resource, start.isoformat())], args=[saga_id]))

    def holder(self, resource: str, start: datetime) -> str | None:
        """The saga holding the slot, or None."""
        value = cast(bytes | None, self.redis.get(keys.slot(resource, start.isoformat())))
        return value.decode() if value is not None else None
