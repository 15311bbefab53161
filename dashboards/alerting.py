"""Grafana alert rules, the webhook contact point for the citywatch alert service, and
the notification policy, in the shapes of Grafana's alerting provisioning HTTP API
(https://grafana.com/docs/grafana/latest/developers/http_api/alerting_provisioning/).

The rule SQL uses plain ``now() - interval`` instead of Grafana macros: provisioning
files interpolate ``$VAR`` from the environment, which would mangle ``$__timeFilter``.
"""

from __future__ import annotations

from typing import Any

from .sdk import DATASOURCE_TYPE, DATASOURCE_UID

FOLDER_UID = "citywatch"
FOLDER_TITLE = "citywatch"
RULE_GROUP = "citywatch"
RULE_GROUP_INTERVAL_S = 60
CONTACT_POINT = "citywatch-alert-service"
CONTACT_POINT_UID = "citywatch-alert-service"
WEBHOOK_URL = "http://alerts:8080/api/v1/grafana/webhook"
# The token is never written to a file: Grafana reads it from its environment.
WEBHOOK_TOKEN_ENV = "CITYWATCH_GRAFANA_WEBHOOK_TOKEN"

HIGH_RISK_SQL = """
SELECT asset_id, asset_type, max(risk / nullif(threshold, 0)) AS risk_over_threshold
FROM scores
WHERE role = 'champion' AND ts > now() - interval '5 minutes'
GROUP BY asset_id, asset_type
""".strip()

STALLED_SQL = """
SELECT count(*) AS readings_last_5m
FROM readings
WHERE ts > now() - interval '5 minutes'
""".strip()

# Readings are partitioned and indexed by ts, not ingested_at: the ts bounds (both ends,
# or the default partition is read too) let the rule read the newest partitions' index
# range instead of every row. Readings over an hour late are left out of the share.
DEADLETTER_SPIKE_SQL = """
SELECT CASE WHEN d.n + r.n < 50 THEN 0 ELSE d.n::float / (d.n + r.n) END AS deadletter_share
FROM (SELECT count(*) AS n FROM deadletters
      WHERE received_at > now() - interval '5 minutes') d,
     (SELECT count(*) AS n FROM readings
      WHERE ingested_at > now() - interval '5 minutes'
        AND ts > now() - interval '1 hour' AND ts < now() + interval '1 hour') r
""".strip()

# Crews did not hear of an alert: a delivery given up in the last hour, or one that
# has been failing (and retrying) for more than 10 minutes.
NOTIFICATIONS_FAILING_SQL = """
SELECT count(*) AS deliveries_failing
FROM alert_deliveries
WHERE (status = 'failed' AND failed_at > now() - interval '1 hour')
   OR (status = 'pending' AND first_error_at < now() - interval '10 minutes')
""".strip()


def _query(sql: str, seconds: int = 300) -> dict[str, Any]:
    return {
        "refId": "A",
        "relativeTimeRange": {"from": seconds, "to": 0},
        "datasourceUid": DATASOURCE_UID,
        "model": {
            "refId": "A",
            "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
            "editorMode": "code",
            "format": "table",
            "rawQuery": True,
            "rawSql": sql,
        },
    }


def _expressions(op: str, value: float) -> list[dict[str, Any]]:
    expr = {"type": "__expr__", "uid": "__expr__"}
    return [
        {
            "refId": "B",
            "relativeTimeRange": {"from": 0, "to": 0},
            "datasourceUid": "__expr__",
            "model": {
                "refId": "B",
                "datasource": expr,
                "type": "reduce",
                "expression": "A",
                "reducer": "last",
            },
        },
        {
            "refId": "C",
            "relativeTimeRange": {"from": 0, "to": 0},
            "datasourceUid": "__expr__",
            "model": {
                "refId": "C",
                "datasource": expr,
                "type": "threshold",
                "expression": "B",
                "conditions": [{"evaluator": {"type": op, "params": [value]}}],
            },
        },
    ]


def _rule(
    uid: str,
    title: str,
    sql: str,
    op: str,
    value: float,
    *,
    for_: str,
    no_data: str,
    severity: str,
    summary: str,
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "ruleGroup": RULE_GROUP,
        "folderUID": FOLDER_UID,
        "orgID": 1,
        "condition": "C",
        "data": [_query(sql), *_expressions(op, value)],
        "noDataState": no_data,
        "execErrState": "Error",
        "for": for_,
        "annotations": {"summary": summary},
        "labels": {"severity": severity, "service": "citywatch"},
        "isPaused": False,
    }


def alert_rules() -> list[dict[str, Any]]:
    """The four rules, as the provisioning API's ProvisionedAlertRule objects."""
    return [
        _rule(
            "citywatch-high-risk",
            "Asset at high failure risk",
            HIGH_RISK_SQL,
            "gt",
            1.0,
            for_="2m",
            no_data="OK",
            severity="warning",
            summary="{{ $labels.asset_id }} ({{ $labels.asset_type }}) scored above its "
            "model threshold for 2 minutes.",
        ),
        _rule(
            "citywatch-pipeline-stalled",
            "Pipeline stalled",
            STALLED_SQL,
            "lt",
            1.0,
            for_="5m",
            no_data="Alerting",
            severity="critical",
            summary="No readings stored in the last 5 minutes: check broker, worker, ingest.",
        ),
        _rule(
            "citywatch-deadletter-spike",
            "Dead-letter spike",
            DEADLETTER_SPIKE_SQL,
            "gt",
            0.05,
            for_="5m",
            no_data="OK",
            severity="warning",
            summary="More than 5 % of messages went to dead letters in the last 5 minutes.",
        ),
        _rule(
            "citywatch-notifications-failing",
            "Crew notifications failing",
            NOTIFICATIONS_FAILING_SQL,
            "gt",
            0.0,
            for_="1m",
            no_data="OK",
            severity="critical",
            summary="Crew notifications are failing: a delivery was given up in the last hour "
            "or has kept failing for 10 minutes (pipeline dashboard, 'Crew notifications "
            "failing'). Crews may not know about open alerts.",
        ),
    ]


def contact_point(token: str) -> dict[str, Any]:
    """The webhook to the citywatch alert service (E), as EmbeddedContactPoint."""
    return {
        "uid": CONTACT_POINT_UID,
        "name": CONTACT_POINT,
        "type": "webhook",
        "settings": {
            "url": WEBHOOK_URL,
            "httpMethod": "POST",
            "authorization_scheme": "Bearer",
            "authorization_credentials": token,
        },
        "disableResolveMessage": False,
    }


def policy_tree() -> dict[str, Any]:
    """Every citywatch alert to the alert service, grouped per rule and asset."""
    return {
        "receiver": CONTACT_POINT,
        "group_by": ["grafana_folder", "alertname", "asset_id"],
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "4h",
    }
