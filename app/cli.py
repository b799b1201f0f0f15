"""`flask saga ...`: the operator's commands, on the same engine the API uses.

flask --app wsgi saga list --status failed
flask --app wsgi saga show <id>
flask --app wsgi saga retry <id> --note "Stripe is back"
flask --app wsgi saga cancel <id> --note "caller hung up"
flask --app wsgi saga resolve <id> --note "refunded by hand"
flask --app wsgi saga stats
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from saga import SagaEngine, SagaNotFound, SagaRecord, SagaStatus
from saga.errors import ActionRefused

saga = AppGroup("saga", help="List, inspect and act on sagas.")

STATUSES = click.Choice([s.value for s in SagaStatus])


def _engine() -> SagaEngine:
    engine: SagaEngine = current_app.extensions["saga_engine"]
    return engine


@contextmanager
def _refusals() -> Iterator[None]:
    """Turn the engine's refusals into a one-line error and exit status 1."""
    try:
        yield
    except (SagaNotFound, ActionRefused) as exc:
        raise click.ClickException(str(exc)) from None


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def _cut(text: str | None, width: int) -> str:
    text = text or ""
    return text if len(text) <= width else text[: width - 1] + "…"


@saga.command("list")
@click.option("--status", "statuses", multiple=True, type=STATUSES, help="Repeat for several; default all.")
@click.option("--call-id", help="Only sagas started for this call id.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--offset", default=0, type=click.IntRange(0))
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def list_sagas(
    statuses: tuple[str, ...], call_id: str | None, limit: int, offset: int, as_json: bool
) -> None:
    """Sagas by status, oldest first."""
    wanted = [SagaStatus(s) for s in statuses] or list(SagaStatus)
    found = _engine().overview.sagas(wanted, reference=call_id, limit=limit, offset=offset)
    if as_json:
        _echo_json([s.as_dict() for s in found])
        return
    click.echo(f"{'ID':32}  {'STATUS':12}  {'CALL ID':16}  {'STEP':14}  {'CREATED':24}  ERROR")
    for s in found:
        click.echo(
            f"{s.id:32}  {s.status.value:12}  {_cut(s.reference, 16):16}  {_cut(s.current_step, 14):14}  "
            f"{s.created_at:24}  {_cut(s.error, 60)}"
        )


def _timeline(record: SagaRecord) -> Iterator[str]:
    yield f"saga {record.id} ({record.name})  {record.status.value}"
    yield f"  call id {record.reference or '-'}  created {record.created_at}"
    yield f"  finished {record.finished_at or '-'}"
    if record.error:
        yield f"  error: {record.error}"
    if record.resolution:
        yield f"  resolution: {record.resolution}"
    yield ""
    yield f"  {'STEP':16}{'STATUS':21}{'TRIES':>6}  {'PROVIDER ID':28}{'UNDO':>6}  UNDO ID"
    for s in record.steps:
        yield (
            f"  {s.name:16}{s.status.value:21}{s.attempts:>6}  {_cut(s.ref, 27):28}"
            f"{s.compensation_attempts:>6}  {s.compensation_ref or ''}"
        )
    yield ""
    for h in record.history:
        where = " ".join(
            part for part in (h.step or "saga", h.direction, f"#{h.attempt}" if h.attempt else None) if part
        )
        yield f"  {h.at}  {where:28} {h.source or '-':>19} -> {h.target:19} {h.detail or ''}"


@saga.command()
@click.argument("saga_id")
@click.option("--json", "as_json", is_flag=True, help="The API's JSON instead of a timeline.")
def show(saga_id: str, as_json: bool) -> None:
    """One saga: its steps and its timeline."""
    with _refusals():
        record = _engine().get(saga_id)
    if as_json:
        _echo_json(record.as_dict())
        return
    for line in _timeline(record):
        click.echo(line)


@saga.command()
@click.argument("saga_id")
@click.option("--note", required=True, help="Why; kept in the saga's history.")
def retry(saga_id: str, note: str) -> None:
    """Run a failed saga's failed compensations again."""
    with _refusals():
        names = _engine().retry(saga_id, note)
    click.echo(f"retrying {', '.join(names)} of saga {saga_id}")


@saga.command()
@click.argument("saga_id")
@click.option("--note", required=True, help="Why; kept in the saga's history.")
def cancel(saga_id: str, note: str) -> None:
    """Stop a running or waiting saga at the next step boundary and compensate."""
    with _refusals():
        _engine().cancel(saga_id, note)
    click.echo(f"saga {saga_id}: {_engine().get(saga_id).status.value}")


@saga.command()
@click.argument("saga_id")
@click.option("--note", required=True, help="What was settled by hand; kept in the saga's history.")
def resolve(saga_id: str, note: str) -> None:
    """Close a failed saga that was settled with the providers by hand."""
    with _refusals():
        _engine().resolve(saga_id, note)
    click.echo(f"saga {saga_id}: resolved")


@saga.command()
@click.option("--json", "as_json", is_flag=True)
def stats(as_json: bool) -> None:
    """Counts by status, the oldest unfinished saga and the last hour's throughput."""
    numbers = _engine().overview.stats()
    summary = {
        "by_status": {s.value: n for s, n in numbers.by_status.items()},
        "oldest_unfinished": numbers.oldest_running_id,
        "oldest_unfinished_age_seconds": round(numbers.oldest_running_age, 1)
        if numbers.oldest_running_age is not None
        else None,
        "finished_last_hour": numbers.finished_last_hour,
    }
    if as_json:
        _echo_json(summary)
        return
    for status, count in summary["by_status"].items():
        click.echo(f"{status:14}{count:>8}")
    age = summary["oldest_unfinished_age_seconds"]
    click.echo(
        f"oldest unfinished: {numbers.oldest_running_id or '-'}" + (f" ({age:g}s)" if age is not None else "")
    )
    click.echo(f"finished in the last hour: {numbers.finished_last_hour}")
