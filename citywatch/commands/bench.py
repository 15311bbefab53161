"""``citywatch bench``: benchmarks that compare against a baseline in the same run."""

from __future__ import annotations

import click


@click.group()
def bench() -> None:
    """Benchmarks; each prints its figures next to a baseline measured in the same run."""
