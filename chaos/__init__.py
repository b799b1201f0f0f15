"""`make chaos`: proves that Saga Relay loses nothing and does nothing twice while it is being crashed.

It runs the real system (redis-server with AOF, gunicorn, several `worker.py`, one
`scheduler.py`), books hundreds of viewings over HTTP with random sandbox faults,
SIGKILLs workers and restarts Redis meanwhile, then checks the outcome against the
sandbox ledger (the outside world), not only against the saga records.

Modules, one job each:

- `procs`: Linux process plumbing (sessions, orphan reaping);
- `cluster`: start, kill, restart and stop the processes and Redis;
- `load`: reproducible booking data, and submitting it over HTTP;
- `monitor`: following saga statuses, the killer, progress output;
- `invariants`: pure checks over what was observed;
- `observe`: reading that from Redis and the ledger;
- `report`: the table and the JSON report;
- `run`: the run from start to verdict.
"""
