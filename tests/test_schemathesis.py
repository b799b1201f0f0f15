"""Property-based tests of the HTTP API from its own OpenAPI document (schemathesis).

Generated requests, valid and invalid, must never get a 5xx, and every answer
must match the documented status codes and schemas. (Driven through
schemathesis' Python API: its pytest plugin does not run under pytest 9 yet.)
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from app import create_app
from config import Settings
from saga import SagaEngine


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi(
    mode: GenerationMode, make_settings: Callable[..., Settings], engine: SagaEngine
) -> None:
    app = create_app(make_settings(rate_limit_per_caller="100000/minute"), engine)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {
        "POST /book",
        "GET /sagas/{saga_id}",
        "POST /sagas/{saga_id}/signals/{signal}",
        "POST /sagas/{saga_id}/cancel",
    }
    strategy = st.one_of([op.as_strategy(generation_mode=mode) for op in operations])

    @given(case=strategy)
    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: schemathesis.Case) -> None:
        engine.redis.flushdb()  # each example starts clean: a reused key with another body is a 422 by design
        case.call_and_validate()

    check()
