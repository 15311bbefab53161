"""The Faust record of the ``alerts`` topic.

Readings, scores and the rest are plain :mod:`core.records` types (the ``readings``
and ``scores`` topics carry bytes in :mod:`core.wire`'s formats); per-message Python
objects are the worker's main cost, so the hot path avoids Faust records. An alert
transition is rare, and Faust serialises it for the ``alerts`` topic.
"""

from __future__ import annotations

import dataclasses
import typing

import faust

from core.records import Alert


def _alert_event_fields() -> dict[str, object]:
    # The worker's Alert, with the transition ("open" or "close") in place of its status,
    # in the order the topic's JSON always had.
    fields = {f.name: f for f in dataclasses.fields(Alert) if f.name != "status"}
    types = typing.get_type_hints(Alert)
    names = ["alert_id", "transition", *(n for n in fields if n != "alert_id")]
    annotations = {n: str if n == "transition" else types[n] for n in names}
    defaults = {n: f.default for n, f in fields.items() if f.default is not dataclasses.MISSING}
    return {"__annotations__": annotations, **defaults}


#: An alert transition (``open`` or ``close``); published to ``alerts`` keyed by asset.
AlertEvent = type(faust.Record)(
    "AlertEvent",
    (faust.Record,),
    {"__module__": __name__, "__qualname__": "AlertEvent", **_alert_event_fields()},
    serializer="json",
    isodates=True,
)


def alert_event(alert: Alert, transition: str) -> AlertEvent:
    """The ``alerts`` topic's record of ``alert`` after ``transition``."""
    return AlertEvent(transition=transition, **_event_values(alert))


def _event_values(alert: Alert) -> dict[str, object]:
    return {f.name: getattr(alert, f.name) for f in dataclasses.fields(alert) if f.name != "status"}
