"""Least privilege in the database: one group role per service, one login per deployment.

Each service of the compose stack logs in as its own role, a member of one NOLOGIN
group role that holds exactly the grants its code needs (found by reading the code
and checked by running it as that role: tests/deploy/test_db_roles.py):

- ``worker`` in ``citywatch_writer``: the Faust worker (readings in; scores, alerts
  and dead letters out; storage maintenance through SECURITY DEFINER functions);
- ``alerts`` in ``citywatch_crew``: the alert API, inbox and notifier;
- ``crew_admin`` in ``citywatch_crew_admin``: ``citywatch alerts user|route|channel|
  escalation``, i.e. users, tokens and routing, which the public API cannot touch;
- ``ingest`` in ``citywatch_ingest``: the LoRaWAN bridge and webhooks (device registry);
- ``simulator`` in ``citywatch_simulator``: fleet registration and ground truth;
- ``trainer`` in ``citywatch_trainer``: train, promote, drift;
- (no login) ``citywatch_downlinks``: ``citywatch downlinks run``, not in compose yet;
- ``grafana`` in ``citywatch_reader``: dashboards and alert rules, read only.

Only the migration job connects as the owner. No group may create, alter, drop or
truncate anything; grants are re-applied on every ``citywatch storage migrate``, so a
table added by a later migration has no grant for anyone but the reader until it is
named here (the test lists every table and fails on one nobody decided about).
"""

from __future__ import annotations

import re

import psycopg
from psycopg import sql

READER = "citywatch_reader"

#: group role -> {table or view: privileges}. Sequences and functions below.
TABLES: dict[str, dict[str, str]] = {
    "citywatch_writer": {
        # leak detection (streams.leaks): district layouts in, candidate rankings out
        "water_networks": "SELECT",
        "network_districts": "SELECT",
        "network_sensors": "SELECT",
        "leak_candidates": "SELECT, INSERT, UPDATE",
        "readings": "SELECT, INSERT",
        "scores": "SELECT, INSERT",
        "score_explanations": "SELECT, INSERT",
        "deadletters": "SELECT, INSERT",
        "maintenance_events": "SELECT, INSERT",
        "station_outlook": "SELECT, INSERT",  # water-quality stations (streams.water_quality)
        "stream_offsets": "SELECT, INSERT, UPDATE",
        "worker_stats": "SELECT, INSERT",  # SELECT: its compose healthcheck
        "devices": "SELECT",
        "routing_rules": "SELECT",
        "alerts": "SELECT, INSERT, UPDATE",
        "alert_transitions": "SELECT, INSERT",  # INSERT ... RETURNING reads the id
        "model_registry": "SELECT",
        "model_promotions": "SELECT",
        "model_load_failures": "SELECT, INSERT",  # a failing version is not retried at once
        # the rollup trigger on readings runs as the inserting role
        "rollup_invalidations": "INSERT",
        "schema_migrations": "SELECT",
    },
    "citywatch_crew": {
        "leak_candidates": "SELECT",  # an alert's suspected leak locations
        "alerts": "SELECT, INSERT, UPDATE",
        "alert_transitions": "SELECT, INSERT, UPDATE",
        "alert_comments": "SELECT, INSERT",
        "alert_deliveries": "SELECT, INSERT, UPDATE",
        "notification_channels": "SELECT",
        "routing_rules": "SELECT",
        "crew_teams": "SELECT",
        "crew_users": "SELECT",
        "crew_tokens": "SELECT",
        "labels": "SELECT, INSERT, UPDATE",
        "devices": "SELECT",
        "readings": "SELECT",
        "score_explanations": "SELECT",
        "station_outlook": "SELECT",  # a station alert's 1-48 h incident outlook
        # crews' fresh-reading requests, sent by the downlink service
        "downlink_commands": "SELECT, INSERT",
        "schema_migrations": "SELECT",
    },
    "citywatch_crew_admin": {
        "crew_teams": "SELECT, INSERT, UPDATE",
        "crew_users": "SELECT, INSERT, UPDATE",
        "crew_tokens": "SELECT, INSERT, UPDATE",
        "routing_rules": "SELECT, INSERT",
        "notification_channels": "SELECT, INSERT, UPDATE",
        "alerts": "SELECT",
        "schema_migrations": "SELECT",
    },
    "citywatch_ingest": {
        # `citywatch networks register`: a network, its districts and sensors
        "water_networks": "SELECT, INSERT, UPDATE",
        "network_districts": "SELECT, INSERT, UPDATE, DELETE",
        "network_sensors": "SELECT, INSERT, UPDATE, DELETE",
        "devices": "SELECT, INSERT, UPDATE",
        # UPDATE only for LOCK TABLE (loaders serialise on it); versions are never updated
        "device_registry_versions": "SELECT, INSERT, UPDATE",
        "schema_migrations": "SELECT",
    },
    "citywatch_simulator": {
        # `citywatch networks register`: a network, its districts and sensors
        "water_networks": "SELECT, INSERT, UPDATE",
        "network_districts": "SELECT, INSERT, UPDATE, DELETE",
        "network_sensors": "SELECT, INSERT, UPDATE, DELETE",
        "network_leaks": "SELECT, INSERT",  # simulated leaks' ground truth
        "devices": "SELECT, INSERT, UPDATE",
        "device_registry_versions": "SELECT, INSERT, UPDATE",
        "failures": "SELECT, INSERT, UPDATE",
        # its compose healthcheck: the newest reading's age
        "readings": "SELECT",
        "schema_migrations": "SELECT",
    },
    # `citywatch downlinks run` (not a compose service yet): no login of its own here;
    # grant this group to the login that runs it.
    "citywatch_downlinks": {
        "downlink_commands": "SELECT, INSERT, UPDATE",
        "devices": "SELECT",
        "readings": "SELECT",  # the device's newest LoRaWAN route
        "schema_migrations": "SELECT",
    },
    "citywatch_trainer": {
        "model_registry": "SELECT, INSERT, UPDATE",
        "model_promotions": "SELECT, INSERT",
        "model_load_failures": "SELECT, INSERT",
        "feature_drift": "SELECT, INSERT, UPDATE",
        "drift_alerts": "SELECT, INSERT",
        "readings": "SELECT",
        "scores": "SELECT",
        "failures": "SELECT",
        "labels": "SELECT",
        "maintenance_events": "SELECT",
        "devices": "SELECT",
        "schema_migrations": "SELECT",
    },
}

#: Tables the reader may not see: token hashes are credentials.
READER_DENIED = ("crew_tokens",)

#: Tables no service role writes or reads beyond the reader (the owner's own work).
OWNER_ONLY = (
    "readings_1m_wide",  # refreshed by citywatch_refresh_rollups() (SECURITY DEFINER)
    "readings_1h_wide",
)

SEQUENCES: dict[str, tuple[str, ...]] = {
    "citywatch_writer": (
        "alert_transitions_transition_id_seq",
        "model_load_failures_failure_id_seq",
    ),
    "citywatch_crew": (
        "alert_transitions_transition_id_seq",
        "alert_comments_comment_id_seq",
        "downlink_commands_command_id_seq",
    ),
    "citywatch_downlinks": ("downlink_commands_command_id_seq",),
    "citywatch_crew_admin": ("routing_rules_rule_id_seq",),
    "citywatch_ingest": ("device_registry_versions_version_seq",),
    "citywatch_simulator": ("device_registry_versions_version_seq",),
    "citywatch_trainer": (
        "model_promotions_promotion_id_seq",
        "model_load_failures_failure_id_seq",
    ),
}

#: The maintenance functions are SECURITY DEFINER (they create and drop partitions as
#: the owner); only the worker, which runs maintenance, may call them.
FUNCTIONS: dict[str, tuple[str, ...]] = {
    "citywatch_writer": (
        "citywatch_ensure_partitions(integer)",
        "citywatch_drop_expired(interval)",
        "citywatch_refresh_rollups()",
    ),
}

#: login role -> its group role.
LOGINS: dict[str, str] = {
    "worker": "citywatch_writer",
    "alerts": "citywatch_crew",
    "crew_admin": "citywatch_crew_admin",
    "ingest": "citywatch_ingest",
    "simulator": "citywatch_simulator",
    "trainer": "citywatch_trainer",
    "grafana": READER,
}

GROUPS = (*TABLES, READER)


def _exists(conn: psycopg.Connection, kind: str, name: str) -> bool:
    query = "SELECT to_regclass(%s)" if kind == "relation" else "SELECT to_regprocedure(%s)"
    return conn.execute(query, (name,)).fetchone()[0] is not None


def _role_exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def apply_grants(conn: psycopg.Connection) -> list[str]:
    """Create the group roles and set their grants to exactly this module's tables.

    Idempotent: every group loses all table, sequence and function privileges in the
    schema first, then gets the listed ones (objects a flavour lacks are skipped).
    Missing roles need CREATEROLE; without it (some managed services) they are
    skipped and returned, for an administrator to create. One transaction.
    """
    database = sql.Identifier(conn.info.dbname)
    can_create = conn.execute(
        "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
    ).fetchone()[0]
    skipped = []
    with conn.transaction():
        for group in GROUPS:
            role = sql.Identifier(group)
            if not _role_exists(conn, group):
                if not can_create:
                    skipped.append(group)
                    continue
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(role))
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, role))
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
            for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
                conn.execute(
                    sql.SQL("REVOKE ALL ON ALL {} IN SCHEMA public FROM {}").format(
                        sql.SQL(kind), role
                    )
                )
        # Migration 8 gave the writer everything, now and for future tables: undo both.
        present = [g for g in TABLES if g not in skipped]
        for group in present:
            for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
                conn.execute(
                    sql.SQL(
                        "ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON {} FROM {}"
                    ).format(sql.SQL(kind), sql.Identifier(group))
                )
        if "citywatch_writer" in present:  # the sink stages batches in temporary tables
            conn.execute(
                sql.SQL("GRANT TEMPORARY ON DATABASE {} TO citywatch_writer").format(database)
            )
        for group in present:
            for table, privileges in TABLES[group].items():
                if _exists(conn, "relation", table):
                    conn.execute(
                        sql.SQL("GRANT {} ON {} TO {}").format(
                            sql.SQL(privileges), sql.Identifier(table), sql.Identifier(group)
                        )
                    )
        for group in present:
            for sequence in SEQUENCES.get(group, ()):
                if _exists(conn, "relation", sequence):
                    conn.execute(
                        sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(
                            sql.Identifier(sequence), sql.Identifier(group)
                        )
                    )
        for group in present:
            for function in FUNCTIONS.get(group, ()):
                if _exists(conn, "function", function):
                    # a regprocedure text (name and argument types), not an identifier
                    conn.execute(
                        sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                            sql.SQL(function), sql.Identifier(group)
                        )
                    )
        if READER in skipped:
            return skipped
        reader = sql.Identifier(READER)
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(reader))
        for table in READER_DENIED:
            if _exists(conn, "relation", table):
                conn.execute(
                    sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.Identifier(table), reader)
                )
    return skipped


def _scram_matches(stored: str | None, password: str) -> bool:
    """True when ``stored`` (a SCRAM-SHA-256 verifier) was made from ``password``.

    Hand-written from RFC 5802/7677 (PostgreSQL's scram_build_secret): libpq can hash
    a password but not check one. It lets a re-run set nothing when nothing changed.
    """
    import base64
    import hashlib
    import hmac

    parts = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", stored or "")
    if parts is None:
        return False
    iterations, salt, stored_key, server_key = parts.groups()
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    expected_stored = base64.b64encode(hashlib.sha256(client_key).digest()).decode()
    expected_server = base64.b64encode(hmac.new(salted, b"Server Key", "sha256").digest())
    return hmac.compare_digest(expected_stored, stored_key) and hmac.compare_digest(
        expected_server.decode(), server_key
    )


def ensure_login(conn: psycopg.Connection, login: str, password: str) -> bool:
    """Create or update a LOGIN role in its group, with this password; True if changed.

    The password is hashed here (SCRAM-SHA-256, by libpq), so the server never sees
    it in a statement, and never logs it. An unchanged password is left alone (when
    this role may read pg_authid), so a re-run changes nothing. Group membership is
    set, not only added.
    """
    group = LOGINS[login]
    role = sql.Identifier(login)
    superuser = conn.execute(
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()[0]
    with conn.transaction():
        exists = _role_exists(conn, login)
        current = None
        if exists and superuser:
            current = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (login,)
            ).fetchone()[0]
        changed = not _scram_matches(current, password)
        if changed:
            verifier = conn.pgconn.encrypt_password(
                password.encode(), login.encode(), b"scram-sha-256"
            ).decode()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(
                    verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}"
                ).format(role, sql.Literal(verifier))
            )
        others = conn.execute(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
            " JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s AND g.rolname <> %s",
            (login, group),
        ).fetchall()
        for (other,) in others:
            conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(other), role))
        member = conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (login, group)).fetchone()[0]
        if not member:
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), role))
    return changed
