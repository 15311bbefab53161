"""Click callbacks shared by several commands."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(_ctx, _param, value: str | None) -> timedelta | None:
    """``90s``, ``15m``, ``1h``, ``2d`` -> timedelta."""
    if value is None:
        return None
    m = _DURATION.match(str(value))
    if not m:
        raise click.BadParameter(f"{value!r} is not a duration like 30m, 1h or 2d")
    return timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})


def parse_time(_ctx, _param, value: str | None) -> datetime | None:
    """An ISO date/time; UTC when it has no zone."""
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO date/time: {value!r}") from exc
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def default_datasets() -> str:
    """The shared datasets folder: ``$CITYWATCH_DATASETS`` or ``../shared/datasets``."""
    return os.environ.get("CITYWATCH_DATASETS", "../shared/datasets")


def datasets_option(help: str):
    """``--data``: a folder of recorded data, by default the shared datasets folder."""
    return click.option(
        "--data",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        default=default_datasets,
        show_default="$CITYWATCH_DATASETS or ../shared/datasets",
        envvar="CITYWATCH_BENCH_DATA",
        help=help,
    )
