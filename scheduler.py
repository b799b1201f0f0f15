"""Scheduler process: enqueues the periodic saga jobs (rq-scheduler)."""

import logging

from config.startup import settings_or_exit
from jobs.runtime import redis_client
from saga.schedule import register_periodic, scheduler


def main() -> None:
    """Register the periodic jobs, then poll until stopped."""
    settings = settings_or_exit()
    sched = scheduler(redis_client(settings), settings.queue_name, settings.scheduler_interval_seconds)
    names = register_periodic(sched, settings.reconcile_interval_seconds)
    logging.getLogger("scheduler").info("periodic jobs registered: %s", ", ".join(names))
    sched.run()


if __name__ == "__main__":
    main()
