"""Start-up checks of the Redis server: settings under which sagas would be lost."""

from __future__ import annotations

from typing import cast

from redis import Redis
from redis.exceptions import ResponseError

from saga.errors import SagaError


class RedisMisconfigured(SagaError):
    """Redis is set up so that it may drop saga state; the process must not start."""


def check_redis(redis: Redis) -> list[str]:
    """Raise `RedisMisconfigured` for settings that lose data; return warnings for risky ones."""
    memory = redis.info("memory")
    policy = memory.get("maxmemory_policy", "noeviction")
    if policy != "noeviction":
        raise RedisMisconfigured(
            f"Redis maxmemory-policy is {policy!r}: under memory pressure Redis would evict saga "
            "records and queued jobs, and sagas would stop half-way. Set `maxmemory-policy noeviction` "
            "(redis.conf, `CONFIG SET maxmemory-policy noeviction`, or your provider's parameter group)."
        )
    persistence = redis.info("persistence")
    try:
        snapshots = cast(dict[str, str], redis.config_get("save")).get("save", "")
    except ResponseError:  # CONFIG is disabled on some managed services; assume their defaults
        snapshots = "unknown"
    if not int(persistence.get("aof_enabled", 0)) and not snapshots:
        return [
            "Redis persistence is off (no AOF, no RDB snapshots): a Redis restart loses every saga "
            "in flight. Use `appendonly yes` with `appendfsync everysec` (docs/operations.md)."
        ]
    return []
