"""Where the broker and database of a run are."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Connection:
    kafka: str
    database_url: str
    tansu: bool  # apply the Tansu work-arounds
