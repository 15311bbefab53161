"""Every closed vocabulary, defined once: the code checks against these tuples, and the
schema's CHECK constraints are spelled from them (``storage/migrations``).

Changing a tuple that a CHECK constraint uses needs a new migration that replaces the
constraint; the migration that created it keeps its own words (see migration 15).
"""

from __future__ import annotations

#: How urgent an alert is; routing rules match "at least" a severity, in this order.
SEVERITIES = ("info", "warning", "critical")

#: An alert's lifecycle in the inbox, in order; every status but the last is live.
ALERT_STATUSES = ("open", "acknowledged", "assigned", "resolved")
LIVE_STATUSES = ALERT_STATUSES[:-1]
#: What the worker says about an alert (the inbox maps 'closed' to an automatic resolution).
WORKER_ALERT_STATUSES = ("open", "closed")
#: Every kind of step in ``alert_transitions``.
ALERT_ACTIONS = ("open", "acknowledge", "assign", "resolve", "escalate")

#: What a crew found when it resolved an alert.
CREW_OUTCOMES = ("fault_confirmed", "false_alarm", "no_access")
#: The outcome of an alert resolved by its source (the worker or Grafana), not by people.
AUTO_OUTCOME = "auto"
ALERT_OUTCOMES = (*CREW_OUTCOMES, AUTO_OUTCOME)
#: Training labels: crews' outcomes plus imported work orders' "maintenance".
LABEL_OUTCOMES = (*CREW_OUTCOMES, "maintenance")
LABEL_SOURCES = ("alert", "work_order")

#: Who uses the crew API. Crews see their own team's alerts; 'webhook' may only post
#: Grafana's webhook.
ROLES = ("crew", "engineer", "admin", "webhook")

#: Where a model version serves: the champion alerts, the challenger only shadows it.
MODEL_ROLES = ("champion", "challenger")
#: Which model a score's risk comes from: supervised, or the cold-start health baseline.
MODEL_KINDS = ("failure_risk", "anomaly")

#: How a notification reaches a team, and how its delivery went.
CHANNEL_KINDS = ("webhook", "slack", "email", "kafka")
DELIVERY_STATUSES = ("pending", "sent", "failed")

#: Why the worker refused a message of the ``readings`` or ``scores`` topic (the
#: dead-letter table's ``reason``, the pipeline dashboard and docs/delivery.md).
WORKER_REJECTIONS = (
    "malformed_json",  # not UTF-8 JSON
    "schema",  # wrong shape: missing or mistyped fields, unknown message type, empty
    "too_large",  # over a size bound: message, string, source, nesting, number digits
    "bad_text",  # a NUL character or a lone surrogate in a string
    "unknown_asset_type",
    "unknown_device",
    "asset_mismatch",  # the device is registered to another asset
    "unknown_metric",
    "nan_value",  # NaN or infinity
    "out_of_range",  # outside the metric's physical range, or too big for a float
    "clock_skew",  # ahead of the worker's clock by more than the allowed skew
    "too_old",  # older than the horizon (a backfill lifts it)
    "duplicate",  # another reading of the device at the same time (decided with state)
    "poison",  # processing raised again and again (the worker's last resort)
)
