"""`python -m bench [--quick] [--only noop,latency,...] [--sagas N]`: run, print the table, write JSON."""

from __future__ import annotations

import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from types import FrameType
from typing import Any

from bench.context import Bench
from bench.options import Options, parse
from bench.progress import Progress
from bench.report import ScenarioResult, summary, table, write_json
from bench.scenarios import SCENARIOS


def _meta(options: Options, bench: Bench, started: float, load_before: tuple[float, ...]) -> dict[str, Any]:
    server: dict[str, Any] = bench.monitor.info("server")
    return {
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "quick": options.quick,
        "scenarios": list(options.scenarios),
        "sizes": vars(options.sizes),
        "options": {
            "saga_worker": options.saga_worker,
            "io_worker": options.io_worker,
            "io_processes": options.io_processes,
            "concurrency": options.concurrency,
            "scale": list(options.scale),
            "intake_concurrency": options.intake_concurrency,
            "intake_rate": options.intake_rate,
        },
        "host": {
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "platform": platform.platform(),
        },
        "versions": {
            "python": platform.python_version(),
            "redis_server": server.get("redis_version"),
            "redis_py": version("redis"),
            "rq": version("rq"),
            "gunicorn": version("gunicorn"),
        },
        "notes": bench.notes,
    }


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: children and redis are stopped


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen scenarios; 0 unless one errored (or, with --strict, a target was missed)."""
    options = parse(argv)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGHUP, _stop_on_signal)
    progress = Progress(len(options.scenarios))
    started, load_before = time.time(), os.getloadavg()
    results: list[ScenarioResult] = []
    with Bench(options, progress) as bench:
        for name in options.scenarios:
            title, run = SCENARIOS[name]
            progress.begin(name)
            try:
                results.append(run(bench))
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                progress.note(f"scenario {name} failed:\n{traceback.format_exc()}")
                results.append(ScenarioResult(name, title, error=f"{type(exc).__name__}: {exc}"))
        meta = _meta(options, bench, started, load_before)
    progress.done()
    path = write_json(options.output, meta, results)
    print(table(results))
    outcome = summary(results)
    print(f"\n{outcome['passed']}/{outcome['targets']} targets met; JSON: {path}")
    if outcome["errors"]:
        return 2
    return 1 if options.strict and outcome["missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
