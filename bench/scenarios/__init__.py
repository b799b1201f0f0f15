"""The six scenarios, by the name `--only` takes; each is `run(bench) -> ScenarioResult`."""

from __future__ import annotations

from collections.abc import Callable

from bench.context import Bench
from bench.report import ScenarioResult
from bench.scenarios import intake, io, latency, memory, overhead, scale

Scenario = tuple[str, Callable[[Bench], ScenarioResult]]

SCENARIOS: dict[str, Scenario] = {
    overhead.NAME: (overhead.TITLE, overhead.run),
    latency.NAME: (latency.TITLE, latency.run),
    io.NAME: (io.TITLE, io.run),
    intake.NAME: (intake.TITLE, intake.run),
    memory.NAME: (memory.TITLE, memory.run),
    scale.NAME: (scale.TITLE, scale.run),
}
