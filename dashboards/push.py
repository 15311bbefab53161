"""Provision a live Grafana over its HTTP API with grafana-client: folder, datasource,
dashboards, alert rules, contact point and notification policy.

Every object is read first and written only when it differs from what the code
defines, so a second run sends no POST, PUT or DELETE. Secrets are write-only in
Grafana's API (a datasource reports ``secureJsonFields``, a contact point shows
``[REDACTED]``), so a secret counts as equal once Grafana holds one; pass
``rotate_secrets`` to send them again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from . import alerting
from .catalog import BUILDERS
from .provision import datasource
from .sdk import DATASOURCE_UID, to_json

log = logging.getLogger(__name__)
REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class DatabaseTarget:
    """How Grafana (not this machine) reaches the database: read-only role."""

    url: str
    database: str
    user: str
    password: str | None = None


@dataclass
class PushReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "writes": len(self.created) + len(self.updated),
        }


def covers(desired: Any, actual: Any) -> bool:
    """True when ``actual`` holds everything ``desired`` says (Grafana adds its own keys)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            k in actual and covers(v, actual[k]) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(covers(d, a) for d, a in zip(desired, actual, strict=True))
        )
    if isinstance(desired, bool) or isinstance(actual, bool):
        return desired is actual
    if isinstance(desired, int | float) and isinstance(actual, int | float):
        return float(desired) == float(actual)
    return desired == actual


def _get(call, *args) -> Any | None:
    """The object, or None when Grafana answers 404."""
    try:
        return call(*args)
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise


class Pusher:
    def __init__(self, api: GrafanaApi, *, rotate_secrets: bool = False) -> None:
        self.api = api
        self.rotate_secrets = rotate_secrets
        self.report = PushReport()

    def _note(self, kind: str, name: str, action: str) -> None:
        getattr(self.report, action).append(f"{kind}:{name}")
        log.info("%s %s: %s", kind, name, action)

    def folder(self) -> None:
        current = _get(self.api.folder.get_folder, alerting.FOLDER_UID)
        if current is None:
            self.api.folder.create_folder(alerting.FOLDER_TITLE, uid=alerting.FOLDER_UID)
            self._note("folder", alerting.FOLDER_UID, "created")
        elif current.get("title") != alerting.FOLDER_TITLE:
            self.api.folder.update_folder(
                alerting.FOLDER_UID, title=alerting.FOLDER_TITLE, overwrite=True
            )
            self._note("folder", alerting.FOLDER_UID, "updated")
        else:
            self._note("folder", alerting.FOLDER_UID, "unchanged")

    def datasource(self, db: DatabaseTarget) -> None:
        desired = datasource(db.url, db.database, db.user, db.password)
        secret = desired.pop("secureJsonData", None)
        current = _get(self.api.datasource.get_datasource_by_uid, DATASOURCE_UID)
        if current is None:
            self.api.datasource.create_datasource({**desired, **_secret(secret)})
            self._note("datasource", DATASOURCE_UID, "created")
            return
        has_secret = bool((current.get("secureJsonFields") or {}).get("password"))
        secret_ok = secret is None or (has_secret and not self.rotate_secrets)
        if covers(desired, current) and secret_ok:
            self._note("datasource", DATASOURCE_UID, "unchanged")
            return
        self.api.datasource.update_datasource_by_uid(DATASOURCE_UID, {**desired, **_secret(secret)})
        self._note("datasource", DATASOURCE_UID, "updated")

    def dashboards(self) -> None:
        for build in BUILDERS.values():
            desired = to_json(build())
            uid = desired["uid"]
            current = _get(self.api.dashboard.get_dashboard, uid)
            if current is not None:
                stored = {
                    k: v for k, v in current["dashboard"].items() if k not in ("id", "version")
                }
                in_folder = (current.get("meta") or {}).get("folderUid") == alerting.FOLDER_UID
                if stored == desired and in_folder:
                    self._note("dashboard", uid, "unchanged")
                    continue
            self.api.dashboard.update_dashboard(
                {
                    "dashboard": {**desired, "id": None},
                    "folderUid": alerting.FOLDER_UID,
                    "overwrite": True,
                    "message": "citywatch grafana push",
                }
            )
            self._note("dashboard", uid, "created" if current is None else "updated")

    def alert_rules(self) -> None:
        provisioning = self.api.alertingprovisioning
        for rule in alerting.alert_rules():
            current = _get(provisioning.get_alertrule, rule["uid"])
            if current is None:
                provisioning.create_alertrule(rule)
                self._note("alert-rule", rule["uid"], "created")
            elif covers(rule, current):
                self._note("alert-rule", rule["uid"], "unchanged")
            else:
                provisioning.update_alertrule(rule["uid"], rule)
                self._note("alert-rule", rule["uid"], "updated")

    def contact_point(self, token: str) -> None:
        provisioning = self.api.alertingprovisioning
        desired = alerting.contact_point(token)
        points = provisioning.get_contactpoints(alerting.CONTACT_POINT) or []
        current = next((p for p in points if p.get("uid") == desired["uid"]), None)
        if current is None:
            provisioning.create_contactpoint(desired)
            self._note("contact-point", desired["uid"], "created")
            return
        compare = desired
        held = (current.get("settings") or {}).get("authorization_credentials")
        if held == REDACTED and not self.rotate_secrets:
            settings = {**desired["settings"], "authorization_credentials": REDACTED}
            compare = {**desired, "settings": settings}
        if covers(compare, current):
            self._note("contact-point", desired["uid"], "unchanged")
        else:
            provisioning.update_contactpoint(desired["uid"], desired)
            self._note("contact-point", desired["uid"], "updated")

    def policy(self) -> None:
        provisioning = self.api.alertingprovisioning
        desired = alerting.policy_tree()
        if covers(desired, provisioning.get_notification_policy_tree()):
            self._note("policy", "root", "unchanged")
        else:
            provisioning.set_notification_policy_tree(desired)
            self._note("policy", "root", "updated")


def _secret(secret: dict[str, Any] | None) -> dict[str, Any]:
    return {"secureJsonData": secret} if secret else {}


def push(
    api: GrafanaApi, db: DatabaseTarget, webhook_token: str, *, rotate_secrets: bool = False
) -> PushReport:
    """Make Grafana match the code; return what was created, updated, left alone."""
    pusher = Pusher(api, rotate_secrets=rotate_secrets)
    pusher.folder()
    pusher.datasource(db)
    pusher.dashboards()
    pusher.alert_rules()
    pusher.contact_point(webhook_token)
    pusher.policy()
    return pusher.report
