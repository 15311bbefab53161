#!/bin/sh
# First start of the timescaledb container only (docker-entrypoint-initdb.d): a login
# for Grafana in the read-only role. Migration 8 finds the role and only adds grants.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v grafana_password="${CITYWATCH_GRAFANA_DB_PASSWORD:?set CITYWATCH_GRAFANA_DB_PASSWORD}" <<'SQL'
CREATE ROLE citywatch_reader NOLOGIN;
CREATE ROLE citywatch_writer NOLOGIN;
CREATE ROLE grafana LOGIN PASSWORD :'grafana_password' IN ROLE citywatch_reader;
SQL
