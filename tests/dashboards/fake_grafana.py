"""A local stand-in for the parts of Grafana 11's HTTP API that `grafana push` uses.

No Grafana server can run here, so this implements the DOCUMENTED request and
response shapes of these endpoints (only those), in memory:

- Folder API, https://grafana.com/docs/grafana/latest/developers/http_api/folder/
  GET /api/folders/:uid (200 folder | 404 {"message": "folder not found"}),
  POST /api/folders {uid, title} (200 folder), PUT /api/folders/:uid.
- Data source API, https://grafana.com/docs/grafana/latest/developers/http_api/data_source/
  GET /api/datasources/uid/:uid (200 data source with secureJsonFields, never the
  secret | 404 {"message": "Data source not found"}), POST /api/datasources (200
  {datasource, id, message: "Datasource added", name}), PUT /api/datasources/uid/:uid
  (200 {datasource, id, message: "Datasource updated", name}).
- Dashboard API, https://grafana.com/docs/grafana/latest/developers/http_api/dashboard/
  GET /api/dashboards/uid/:uid (200 {dashboard (+id, version), meta {folderUid, ...}} |
  404 {"message": "Dashboard not found"}), POST /api/dashboards/db {dashboard,
  folderUid, overwrite, message} (200 {id, uid, url, status: "success", version, slug}).
- Alerting provisioning API,
  https://grafana.com/docs/grafana/latest/developers/http_api/alerting_provisioning/
  GET/PUT /api/v1/provisioning/alert-rules/:uid, POST /api/v1/provisioning/alert-rules
  (201 ProvisionedAlertRule, adds id, updated, provenance "api"),
  GET /api/v1/provisioning/contact-points?name= (list; secure settings read back as
  "[REDACTED]"), POST (202) and PUT /:uid (202) contact points,
  GET/PUT /api/v1/provisioning/policies (route tree; PUT 202 {"message": "policies updated"}).
Every request needs ``Authorization: Bearer <token>`` (401 otherwise), as service
account tokens do (https://grafana.com/docs/grafana/latest/developers/http_api/auth/).
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from citywatch.stack import free_port

SECURE_WEBHOOK_SETTINGS = ("authorization_credentials", "password")


class FakeGrafana:
    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[tuple[str, str]] = []
        self.folders: dict[str, dict] = {}
        self.datasources: dict[str, dict] = {}
        self.secrets: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}
        self.rules: dict[str, dict] = {}
        self.contact_points: dict[str, dict] = {}
        # Grafana's default notification policy before anything is provisioned.
        self.policy: dict[str, Any] = {
            "receiver": "grafana-default-email",
            "group_by": ["grafana_folder", "alertname"],
        }
        self._ids = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeGrafana:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] in ("POST", "PUT", "DELETE", "PATCH")]

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    # -- routes: (status, body) ------------------------------------------------

    def route(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        m = re.fullmatch(r"/api/folders/([^/]+)", path)
        if m and method == "GET":
            folder = self.folders.get(m.group(1))
            return (200, folder) if folder else (404, {"message": "folder not found"})
        if path == "/api/folders" and method == "POST":
            uid = body.get("uid") or f"f{self._next_id()}"
            folder = {
                "id": self._next_id(),
                "uid": uid,
                "title": body["title"],
                "url": f"/dashboards/f/{uid}/",
                "version": 1,
            }
            self.folders[uid] = folder
            return 200, folder
        if m and method == "PUT":
            folder = self.folders[m.group(1)]
            folder.update(title=body["title"], version=folder["version"] + 1)
            return 200, folder

        m = re.fullmatch(r"/api/datasources/uid/([^/]+)", path)
        if m and method == "GET":
            ds = self.datasources.get(m.group(1))
            return (200, ds) if ds else (404, {"message": "Data source not found"})
        if (path == "/api/datasources" and method == "POST") or (m and method == "PUT"):
            body = dict(body)
            secret = body.pop("secureJsonData", None)
            uid = body["uid"] if not m else m.group(1)
            old = self.datasources.get(uid, {})
            ds = {
                "id": old.get("id") or self._next_id(),
                "orgId": 1,
                "basicAuth": False,
                "readOnly": False,
                "jsonData": {},
                **body,
                "uid": uid,
                "version": old.get("version", 0) + 1,
            }
            if secret:
                self.secrets[uid] = secret
            ds["secureJsonFields"] = {k: True for k in self.secrets.get(uid, {})}
            self.datasources[uid] = ds
            message = "Datasource updated" if m else "Datasource added"
            return 200, {"datasource": ds, "id": ds["id"], "message": message, "name": ds["name"]}

        m = re.fullmatch(r"/api/dashboards/uid/([^/]+)", path)
        if m and method == "GET":
            stored = self.dashboards.get(m.group(1))
            if not stored:
                return 404, {"message": "Dashboard not found"}
            return 200, copy.deepcopy(stored)
        if path == "/api/dashboards/db" and method == "POST":
            dash = dict(body["dashboard"])
            uid = dash["uid"]
            old = self.dashboards.get(uid)
            dash["id"] = old["dashboard"]["id"] if old else self._next_id()
            dash["version"] = old["dashboard"]["version"] + 1 if old else 1
            meta = {"folderUid": body.get("folderUid", ""), "slug": uid, "provisioned": False}
            self.dashboards[uid] = {"dashboard": dash, "meta": meta}
            return 200, {
                "id": dash["id"],
                "uid": uid,
                "url": f"/d/{uid}/{uid}",
                "status": "success",
                "version": dash["version"],
                "slug": uid,
            }

        m = re.fullmatch(r"/api/v1/provisioning/alert-rules/([^/]+)", path)
        if m and method == "GET":
            rule = self.rules.get(m.group(1))
            return (200, rule) if rule else (404, {"message": "rule not found"})
        if (path == "/api/v1/provisioning/alert-rules" and method == "POST") or (
            m and method == "PUT"
        ):
            uid = m.group(1) if m else body["uid"]
            old = self.rules.get(uid, {})
            rule = {
                **body,
                "uid": uid,
                "id": old.get("id") or self._next_id(),
                "updated": "2026-01-01T00:00:00Z",
                "provenance": "api",
            }
            self.rules[uid] = rule
            return (200 if m else 201), rule

        if path == "/api/v1/provisioning/contact-points" and method == "GET":
            name = (query.get("name") or [None])[0]
            return 200, [
                self._redacted(cp)
                for cp in self.contact_points.values()
                if name is None or cp["name"] == name
            ]
        m = re.fullmatch(r"/api/v1/provisioning/contact-points/([^/]+)", path)
        if (path == "/api/v1/provisioning/contact-points" and method == "POST") or (
            m and method == "PUT"
        ):
            uid = m.group(1) if m else body.get("uid") or f"cp{self._next_id()}"
            self.contact_points[uid] = {**body, "uid": uid}
            return 202, self._redacted(self.contact_points[uid])

        if path == "/api/v1/provisioning/policies" and method == "GET":
            return 200, copy.deepcopy(self.policy)
        if path == "/api/v1/provisioning/policies" and method == "PUT":
            self.policy = body
            return 202, {"message": "policies updated"}
        return 404, {"message": "Not found"}

    @staticmethod
    def _redacted(cp: dict) -> dict:
        cp = copy.deepcopy(cp)
        for key in SECURE_WEBHOOK_SETTINGS:
            if key in cp.get("settings", {}):
                cp["settings"][key] = "[REDACTED]"
        return cp

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet test output
                pass

            def _serve(self) -> None:
                url = urlparse(self.path)
                fake.requests.append((self.command, url.path))
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    status, body = 401, {"message": "Unauthorized"}
                else:
                    payload = json.loads(raw) if raw else None
                    status, body = fake.route(self.command, url.path, parse_qs(url.query), payload)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        return Handler
