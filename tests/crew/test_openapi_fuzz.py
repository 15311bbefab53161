"""Schemathesis against the API's own OpenAPI spec, on a real server and database.

The spec is read at import from the app itself (building routes needs no
database). Requests go over real HTTP with httpx: schemathesis' own requests
transport trips over the urllib3-future package in this environment, so we
send each generated case ourselves and let schemathesis validate the response.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import ignored_auth

from citywatch.stack import free_port
from crew.api import create_app
from crew.auth import create_user
from crew.server import BackgroundServer
from storage.sinks import PostgresSink, SinkBatch

from .conftest import alert_row

pytestmark = pytest.mark.stack

schema = schemathesis.openapi.from_dict(create_app("postgresql:///spec-only").openapi())


@pytest.fixture
def live_api(conn, crew_db):
    token = create_user(crew_db, "fuzz-admin", "admin")
    sink = PostgresSink(conn.database_url)
    sink.write(SinkBatch(alerts=[alert_row("pump-f")]))
    sink.close()
    # Limits out of the way: the fuzzer sends junk tokens on purpose (see test_api_abuse).
    app = create_app(
        conn.database_url, rate_per_s=10_000, burst=10_000, auth_failures_per_min=10_000
    )
    with BackgroundServer(app, free_port()) as server, httpx.Client(timeout=30) as client:
        yield server.url, token, client


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_spec(case, live_api):
    url, token, client = live_api
    # A negative case may have broken the Authorization header on purpose (dropped it,
    # or a value HTTP cannot carry, which httpx refuses to send): it goes without one.
    # Adding a valid token back made it a valid request that the server rightly accepted.
    broken_auth = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    headers = {} if broken_auth else {"Authorization": f"Bearer {token}"}
    kw = case.as_transport_kwargs(base_url=url, headers=headers)
    if broken_auth:
        kw["headers"] = {
            k: v for k, v in (kw.get("headers") or {}).items() if k.lower() != "authorization"
        }
    response = client.request(
        kw["method"],
        kw["url"],
        headers=kw.get("headers"),
        params=kw.get("params"),
        json=kw.get("json"),
        content=kw.get("data"),
    )
    # ignored_auth re-sends through the broken requests transport; auth has its own tests.
    case.validate_response(
        response, headers=headers, transport_kwargs=kw, excluded_checks=[ignored_auth]
    )
