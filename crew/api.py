"""The alert service's HTTP API (FastAPI, OpenAPI at /openapi.json) and the web inbox.

Every endpoint needs ``Authorization: Bearer <token>``. Crews see and change
only their own team's alerts (another team's alert is a 404, so ids don't
leak); engineers and admins see all. Grafana posts its alert notifications to
``POST /api/v1/grafana/webhook`` with a ``webhook`` token (or an engineer's).
Rate limits, the body cap, auth and security headers sit in front of the app
(``crew.guard``), so none of them costs database work or reads a body first.
"""

import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import BaseModel, ConfigDict, Field

from core.vocabulary import ALERT_STATUSES, CREW_OUTCOMES, LIVE_STATUSES, SEVERITIES
from storage.alerts import inbox
from storage.alerts.access import Actor, NotFoundError, TransitionError
from storage.alerts.actions import add_comment
from storage.water_networks import alert_leak_candidates

from . import auth, lifecycle
from .downlinks_api import add_downlink_routes, visible_alert
from .guard import ACTOR_KEY, Guard, GuardConfig
from .outlook_api import add_outlook_routes
from .strict_query import reject_unexpected_query

log = logging.getLogger(__name__)
INBOX_DIR = Path(__file__).parent / "inbox"

Status = Literal[ALERT_STATUSES]  # type: ignore[valid-type]
Severity = Literal[SEVERITIES]  # type: ignore[valid-type]
Outcome = Literal[CREW_OUTCOMES]  # type: ignore[valid-type]
# PostgreSQL text cannot hold NUL characters; saying so in the spec (rather than only
# answering 422 when the database refuses them) keeps the spec and the API in agreement.
NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, Field(pattern=NO_NUL)]
_NUL_MESSAGE = "PostgreSQL text fields cannot contain NUL (0x00) bytes"
AlertId = Annotated[str, PathParam(min_length=1, max_length=300, pattern=NO_NUL)]
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")]
Note = Annotated[str | None, Field(default=None, max_length=2000, pattern=NO_NUL)]


# -- response and request models ------------------------------------------------


class AlertOut(BaseModel):
    alert_id: str
    asset_id: str
    device_id: str
    asset_type: str
    status: Status
    severity: Severity
    source: str
    team: str | None
    zone: str | None
    title: str | None
    opened_at: datetime
    closed_at: datetime | None
    raised_at: datetime
    peak_risk: float
    last_risk: float
    threshold: float
    model_version: str
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    assigned_to: str | None
    assigned_at: datetime | None
    assigned_by: str | None
    resolved_by: str | None
    outcome: str | None
    escalation_level: int
    escalated_at: datetime | None
    updated_at: datetime


class TransitionOut(BaseModel):
    transition_id: int
    action: str
    from_status: str | None
    to_status: str
    actor: str
    at: datetime
    level: int
    detail: dict[str, Any]


class CommentOut(BaseModel):
    comment_id: int
    author: str
    at: datetime
    body: str


class AlertDetail(BaseModel):
    alert: AlertOut
    transitions: list[TransitionOut]
    comments: list[CommentOut]


class ReadingOut(BaseModel):
    ts: datetime
    device_id: str
    metrics: dict[str, Any]


class Contribution(BaseModel):
    feature: str
    contribution: float


class ExplanationOut(BaseModel):
    ts: datetime
    model_version: str
    risk: float
    bias: float | None
    top: list[Contribution]


class LeakCandidateOut(BaseModel):
    """Where a water district's leak most likely is (streams/leaks.py ranks them)."""

    ts: datetime
    rank: int
    node: str
    score: float
    lat: float | None
    lon: float | None
    x: float | None
    y: float | None


class AlertContext(BaseModel):
    readings: list[ReadingOut]
    explanation: ExplanationOut | None
    leak_candidates: list[LeakCandidateOut] = []


class Me(BaseModel):
    user_name: str
    role: str
    team: str | None


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Note = None


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assignee: Name
    note: Note = None


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: Outcome
    note: Note = None


class CommentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body: str = Field(min_length=1, max_length=4000, pattern=NO_NUL)


class GrafanaAlert(BaseModel):
    """One alert instance of Grafana's webhook notification (unified alerting)."""

    model_config = ConfigDict(extra="allow")
    status: Literal["firing", "resolved"]
    # Keys must match the pattern too (patternProperties alone would allow others).
    labels: dict[Text, Text] = Field(
        default_factory=dict, json_schema_extra={"additionalProperties": False}
    )
    annotations: dict[Text, Text] = Field(
        default_factory=dict, json_schema_extra={"additionalProperties": False}
    )
    # Grafana's own (camelCase) field names.
    startsAt: datetime
    endsAt: datetime | None = None
    fingerprint: str | None = Field(default=None, max_length=200, pattern=NO_NUL)
    values: dict[Text, float | None] | None = Field(
        default=None, json_schema_extra={"additionalProperties": False}
    )
    generatorURL: Text | None = None


class GrafanaPayload(BaseModel):
    """Grafana's webhook contact point body (``version`` "1")."""

    model_config = ConfigDict(extra="allow")
    receiver: Text | None = None
    status: Literal["firing", "resolved"]
    alerts: list[GrafanaAlert] = Field(max_length=1000)
    groupKey: Text | None = None
    externalURL: Text | None = None
    version: Text | None = None


class GrafanaResult(BaseModel):
    alert_id: str
    result: Literal["opened", "merged", "unchanged", "resolved"]


class GrafanaOut(BaseModel):
    results: list[GrafanaResult]


class Problem(BaseModel):
    detail: str


class ValidationProblem(BaseModel):
    detail: list[dict[str, Any]]


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or invalid token"},
    403: {"model": Problem, "description": "Role not allowed"},
    413: {"model": Problem, "description": "Body over the size limit"},
    422: {
        "model": ValidationProblem,
        "description": "Invalid parameters or body, or a query parameter the route does not take",
    },
    429: {"model": Problem, "description": "Rate limit exceeded (per client)"},
}
_ALERT_ERRORS = {**_ERRORS, 404: {"model": Problem, "description": "No such alert"}}
_BODY_ERRORS = {400: {"model": Problem, "description": "Body is not valid JSON"}}
_CHANGE_ERRORS = {
    **_ALERT_ERRORS,
    **_BODY_ERRORS,
    409: {"model": Problem, "description": "Not allowed from the alert's status"},
}


# -- the app ------------------------------------------------------------------


def create_app(
    database_url: str,
    *,
    rate_per_s: float = 10.0,
    burst: int = 40,
    auth_failures_per_min: int = 10,
    max_body: int = 64 * 1024,
    trusted_proxies: Sequence[str] = (),
    pool_size: int = 8,
    health: Callable[[], dict[str, Any]] | None = None,
) -> FastAPI:
    """The API and the inbox; the notifier runs beside it (see ``citywatch alerts serve``).

    Limits are per client address (see ``crew.guard``); ``app.state.pool`` is the
    connection pool, opened at the first request (building the spec needs none).
    """
    # Checked on checkout (one round trip) so a database restart costs no failed request.
    pool = ConnectionPool(
        database_url,
        min_size=1,
        max_size=pool_size,
        open=False,
        timeout=10,
        kwargs={"autocommit": True, "connect_timeout": 5},
        check=ConnectionPool.check_connection,
        name="crew-api",
    )
    opening = threading.Lock()

    def connection() -> Any:
        if pool.closed:
            with opening:
                if pool.closed:
                    pool.open(wait=False)
        return pool.connection()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.close()

    app = FastAPI(
        title="citywatch alerts",
        version="1",
        description="Alert lifecycle for maintenance crews: list, acknowledge, assign, "
        "resolve with an outcome, comment; Grafana webhooks as another source.",
        lifespan=lifespan,
        dependencies=[Depends(reject_unexpected_query)],
    )
    app.state.pool = pool
    bearer = HTTPBearer(
        auto_error=False, description="An API token from `citywatch alerts user add`"
    )

    def authenticate(token: str) -> Actor | None:
        with connection() as conn:
            return auth.authenticate(conn, token)

    def db() -> Iterator[psycopg.Connection]:
        # Autocommit: each write runs in its own `conn.transaction()` and commits
        # before the response goes out (a dependency's exit runs after it).
        with connection() as conn:
            yield conn

    def actor(
        request: Request,
        _creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Actor:
        # The guard authenticated the token before the body was read; ``bearer`` is
        # here so the spec declares the scheme.
        who = request.scope.get(ACTOR_KEY)
        if who is None:
            raise HTTPException(401, "missing or invalid token", {"WWW-Authenticate": "Bearer"})
        return who

    Who = Annotated[Actor, Depends(actor)]
    Conn = Annotated[psycopg.Connection, Depends(db)]

    def change(conn: psycopg.Connection, alert_id: str, action: str, who: Actor, **kw) -> dict:
        try:
            return lifecycle.transition(conn, alert_id, action, who, **kw)
        except NotFoundError as exc:
            raise HTTPException(404, f"no alert {alert_id}") from exc
        except TransitionError as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name the reason for NUL characters, as the database path below does.
        errors = jsonable_encoder(exc.errors())
        for error in errors:
            if (error.get("ctx") or {}).get("pattern") == NO_NUL:
                error["msg"] = _NUL_MESSAGE
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(psycopg.DataError)
    def bad_data(_request: Request, exc: psycopg.DataError) -> JSONResponse:
        # Input the models accept but PostgreSQL cannot store (e.g. NUL characters):
        # a validation error in FastAPI's own 422 shape, not a 500.
        msg = str(exc).splitlines()[0] if str(exc) else "invalid input"
        return JSONResponse(
            status_code=422, content={"detail": [{"loc": [], "msg": msg, "type": "value_error"}]}
        )

    @app.exception_handler(PoolTimeout)
    def pool_busy(_request: Request, _exc: PoolTimeout) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": "database busy or down"})

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        # ``health`` is the notifier's liveness: the API can be up while it is stuck.
        notifier = health() if health is not None else None
        ok = notifier is None or notifier["alive"]
        body: dict[str, Any] = {"status": "ok" if ok else "notifier not running"}
        if notifier is not None:
            body["notifier"] = notifier
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/inbox/")

    @app.get("/api/v1/me", response_model=Me, responses=_ERRORS)
    def me(who: Who) -> Me:
        """The token's user, role and team."""
        return Me(user_name=who.user_name, role=who.role, team=who.team)

    @app.get("/api/v1/alerts", response_model=list[AlertOut], responses=_ERRORS)
    def list_alerts(
        who: Who,
        conn: Conn,
        status: Annotated[list[Status] | None, Query()] = None,
        live: Annotated[bool, Query(description="Only open, acknowledged or assigned")] = False,
        team: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
        asset_type: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
        zone: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
        severity: Severity | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[dict]:
        """Alerts visible to the caller, riskiest first; crews see their own team's only."""
        statuses = list(status or []) or (list(LIVE_STATUSES) if live else None)
        return inbox.list_alerts(
            conn,
            who,
            statuses=statuses,
            team=team,
            asset_type=asset_type,
            zone=zone,
            severity=severity,
            limit=limit,
        )

    @app.get("/api/v1/alerts/{alert_id}", response_model=AlertDetail, responses=_ALERT_ERRORS)
    def get_alert(alert_id: AlertId, who: Who, conn: Conn) -> dict:
        """One alert with its transitions (who did what, when) and comments."""
        alert = visible_alert(conn, alert_id, who)
        return {"alert": alert, **inbox.alert_history(conn, alert_id)}

    @app.get(
        "/api/v1/alerts/{alert_id}/context",
        response_model=AlertContext,
        responses=_ALERT_ERRORS,
    )
    def alert_context(
        alert_id: AlertId,
        who: Who,
        conn: Conn,
        readings: Annotated[int, Query(ge=1, le=1000)] = 120,
    ) -> dict:
        """The asset's recent readings and the model's top feature contributions."""
        alert = visible_alert(conn, alert_id, who)
        version = alert["model_version"] if alert["source"] == "model" else None
        return {
            "readings": inbox.recent_readings(conn, alert["asset_id"], readings),
            "explanation": inbox.top_contributions(conn, alert["asset_id"], version),
            "leak_candidates": alert_leak_candidates(conn, alert["asset_id"], alert["opened_at"]),
        }

    @app.post(
        "/api/v1/alerts/{alert_id}/acknowledge",
        response_model=AlertOut,
        responses=_CHANGE_ERRORS,
    )
    def acknowledge(alert_id: AlertId, body: AckIn, who: Who, conn: Conn) -> dict:
        """open -> acknowledged."""
        return change(conn, alert_id, "acknowledge", who, note=body.note)

    @app.post("/api/v1/alerts/{alert_id}/assign", response_model=AlertOut, responses=_CHANGE_ERRORS)
    def assign(alert_id: AlertId, body: AssignIn, who: Who, conn: Conn) -> dict:
        """open | acknowledged | assigned -> assigned to a user (crews: within their team)."""
        return change(conn, alert_id, "assign", who, assignee=body.assignee, note=body.note)

    @app.post(
        "/api/v1/alerts/{alert_id}/resolve", response_model=AlertOut, responses=_CHANGE_ERRORS
    )
    def resolve(alert_id: AlertId, body: ResolveIn, who: Who, conn: Conn) -> dict:
        """Any live status -> resolved with an outcome; the outcome becomes a training label."""
        return change(conn, alert_id, "resolve", who, outcome=body.outcome, note=body.note)

    @app.post(
        "/api/v1/alerts/{alert_id}/comments",
        response_model=CommentOut,
        status_code=201,
        responses={**_ALERT_ERRORS, **_BODY_ERRORS},
    )
    def comment(alert_id: AlertId, body: CommentIn, who: Who, conn: Conn) -> dict:
        """Add a comment to an alert (any status)."""
        try:
            return add_comment(conn, alert_id, who, body.body)
        except NotFoundError as exc:
            raise HTTPException(404, f"no alert {alert_id}") from exc

    @app.post(
        "/api/v1/grafana/webhook",
        response_model=GrafanaOut,
        responses={
            **_ERRORS,
            **_BODY_ERRORS,
            403: {"model": Problem, "description": "Role not allowed"},
        },
    )
    def grafana_webhook(payload: GrafanaPayload, who: Who, conn: Conn) -> dict:
        """Grafana's webhook contact point: firing alerts open, resolved ones auto-resolve."""
        if who.role not in ("webhook", "engineer", "admin"):
            raise HTTPException(403, "Grafana webhooks need a webhook, engineer or admin token")
        results = lifecycle.apply_grafana_payload(conn, payload.model_dump(), who)
        return {"results": results}

    add_downlink_routes(app, Who, Conn, AlertId, _ALERT_ERRORS)
    add_outlook_routes(app, Who, Conn, AlertId, _ALERT_ERRORS)
    app.mount("/inbox", StaticFiles(directory=INBOX_DIR, html=True), name="inbox")
    guard = GuardConfig(
        rate_per_s=rate_per_s,
        burst=burst,
        auth_failures_per_min=auth_failures_per_min,
        max_body=max_body,
        trusted_proxies=tuple(trusted_proxies),
    )
    # Outermost, so it runs before FastAPI reads a body or opens a connection.
    app.add_middleware(Guard, config=guard, authenticate=authenticate)
    return app
