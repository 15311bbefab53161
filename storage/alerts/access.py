"""Who acts on alerts, and which alerts they may see: crews only their own team's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg


class TransitionError(ValueError):
    """The action is not allowed from the alert's current status."""


class NotFoundError(LookupError):
    """No such alert (or not visible to this user)."""


@dataclass(frozen=True)
class Actor:
    """Who acts; crews only see and change their own team's alerts."""

    user_name: str
    role: str
    team: str | None

    @property
    def team_scope(self) -> str | None:
        return self.team if self.role == "crew" else None


def get_alert(cur: psycopg.Cursor, alert_id: str, actor: Actor) -> dict[str, Any]:
    row = cur.execute("SELECT * FROM alerts WHERE alert_id = %s", (alert_id,)).fetchone()
    if row is None or (actor.team_scope and row["team"] != actor.team_scope):
        raise NotFoundError(alert_id)
    return row
