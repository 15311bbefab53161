"""The ``citywatch`` command line.

Every option also reads a ``CITYWATCH_*`` environment variable (see
``core.settings``); nothing is configured by editing code.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from citywatch.stack import EmbeddedStack, StackError
from core.settings import Settings
from services.errors import ServiceError


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Client libraries narrate every connection at INFO; keep the log readable.
    for noisy in ("kafka", "aiokafka", "faust.transport", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


class _Main(click.Group):
    """The command group; a service's ``ServiceError`` is printed like a click error."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ServiceError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", envvar="CITYWATCH_LOG_LEVEL", default="info", show_default=True)
@click.pass_context
def main(ctx: click.Context, log_level: str) -> None:
    """citywatch: streaming predictive maintenance for city infrastructure.

    Sensor readings from water pumps and mains, bridges, lifts and escalators,
    and streetlights flow through Kafka; a Faust worker scores each asset's
    failure risk with LightGBM and writes readings, scores and alerts to
    PostgreSQL/TimescaleDB for Grafana.

    \b
    Quick start (embedded broker and database, no Docker):
      citywatch demo --duration 60      run everything, print a summary
      citywatch stack up                start the broker and database only
      citywatch worker                  run the stream worker
      citywatch simulate --rate 500     feed it simulated devices

    Set CITYWATCH_KAFKA and CITYWATCH_DATABASE_URL to use an external Kafka and
    PostgreSQL/TimescaleDB instead of the embedded ones.
    """
    _setup_logging(log_level)
    ctx.obj = Settings(log_level=log_level)


# -- stack -------------------------------------------------------------------


@main.group()
def stack() -> None:
    """Start, stop and inspect the embedded broker (Tansu) and PostgreSQL."""


@stack.command("up")
@click.option("--json", "as_json", is_flag=True, help="Print service URLs as JSON.")
@click.pass_obj
def stack_up(settings: Settings, as_json: bool) -> None:
    """Start the broker and database on free loopback ports (idempotent)."""
    try:
        status = EmbeddedStack(settings).up()
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc
    _print_status(status, as_json)


@stack.command("down")
@click.pass_obj
def stack_down(settings: Settings) -> None:
    """Stop everything `stack up` started."""
    EmbeddedStack(settings).down()
    click.echo("stack stopped")


@stack.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print service URLs as JSON.")
@click.pass_obj
def stack_status(settings: Settings, as_json: bool) -> None:
    """Show which services run and where."""
    _print_status(EmbeddedStack(settings).status(), as_json)


def _print_status(status: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    if not status:
        click.echo("nothing running (run `citywatch stack up`)")
    for name, info in status.items():
        state = "external" if info["external"] else ("running" if info["running"] else "stopped")
        pid = f" pid {info['pid']}" if info.get("pid") else ""
        click.echo(f"{name:9s} {state:8s} {info['url']}{pid}")


# -- worker ------------------------------------------------------------------


@main.command()
@click.option("--partitions", type=int, envvar="CITYWATCH_PARTITIONS", default=4, show_default=True)
@click.option(
    "--batch-size", type=int, envvar="CITYWATCH_BATCH_SIZE", default=500, show_default=True
)
@click.option(
    "--max-reading-age-days",
    type=float,
    envvar="CITYWATCH_MAX_READING_AGE_DAYS",
    default=7.0,
    show_default=True,
    help="Refuse readings older than this as too_old; 0 lifts the limit for a backfill.",
)
@click.pass_obj
def worker(
    settings: Settings, partitions: int, batch_size: int, max_reading_age_days: float
) -> None:
    """Run the Faust stream worker until Ctrl-C.

    It validates readings, keeps per-device feature state in Faust tables,
    scores batches with the champion model, raises alerts with hysteresis and
    writes everything to the database. Bad input goes to the `deadletter`
    topic and table with its reason; a batch is acknowledged only once every
    message in it is stored or dead-lettered (docs/delivery.md).
    """
    from citywatch.runtime import connect

    settings = settings.model_copy(
        update={
            "partitions": partitions,
            "batch_size": batch_size,
            "max_reading_age_days": max_reading_age_days,
        }
    )
    from streams.app import run_worker

    conn = connect(settings, start_embedded=False)
    run_worker(settings, conn.kafka, conn.database_url, tansu=conn.tansu)


def _register_commands() -> None:
    from citywatch.commands import (
        alerts,
        assets,
        bench,
        bench_alerts,
        bench_faults,
        bench_ingest,
        bench_leaks,
        bench_model,
        bench_pipeline,
        bench_scoring,
        bench_sink,
        bench_water_quality,
        bench_water_quality_replay,
        bench_worker,
        dashboards,
        demo,
        downlinks,
        drift,
        grafana,
        ingest,
        ingest_check,
        labels,
        model,
        networks,
        register,
        replay,
        simulate,
        storage,
        train,
        water_quality,
    )

    for command in (
        simulate.simulate,
        train.train,
        demo.demo,
        bench.bench,
        model.model,
        labels.labels,
        networks.networks,
        drift.drift,
        dashboards.dashboards,
        grafana.grafana,
        storage.storage,
        alerts.alerts,
        register.register,
        assets.assets,
        replay.replay,
        water_quality.water_quality,
        downlinks.downlinks,
    ):
        main.add_command(command)
    main.add_command(ingest.ingest)
    ingest.ingest.add_command(ingest_check.ingest_check)
    ingest.ingest.add_command(ingest_check.ingest_import)
    main.add_command(ingest.devices)
    for subcommand in (
        bench_worker.bench_worker,
        bench_pipeline.bench_pipeline,
        bench_sink.bench_sink,
        bench_alerts.bench_alerts,
        bench_model.bench_model,
        bench_scoring.bench_scoring,
        bench_ingest.bench_ingest,
        bench_leaks.bench_leaks,
        bench_faults.bench_faults,
        bench_water_quality.bench_water_quality,
        bench_water_quality_replay.bench_water_quality_replay,
    ):
        bench.bench.add_command(subcommand)


_register_commands()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
