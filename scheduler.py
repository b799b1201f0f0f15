"""Scheduler process: enqueues the periodic saga jobs (rq-scheduler), e.g. the reconciler."""

import logging

from config.startup import redis_or_exit, settings_or_exit
from saga.schedule import register_periodic, scheduler


def main() -> None:
    """Register the periodic jobs, then poll until stopped."""
    settings = settings_or_exit()
    sched = scheduler(redis_or_exit(settings), settings.queue_name, settings.scheduler_interval_seconds)
    names = register_periodic(sched, settings.reconcile_interval_seconds)
    logging.getLogger("scheduler").info("periodic jobs registered: %s", ", ".join(names))
    sched.run()


if __name__ == "__main__":
    main()
