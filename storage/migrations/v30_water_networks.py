"""Migrations 30-32: water networks, districts, network sensors, leaks and leak candidates."""

from __future__ import annotations

from storage.migrations.base import Migration

MIGRATIONS: list[Migration] = [
    # Water networks (J): a network (its EPANET model), its district metered areas,
    # and which node or pipe each sensor device sits on. The sensors themselves are
    # ordinary ``devices`` rows (asset_id = '<network>.<district>'), so readings,
    # routing and the inbox treat a district like any asset.
    (
        30,
        "water networks, districts and network sensors",
        """
        CREATE TABLE water_networks (
            network_id      text PRIMARY KEY,
            inp_file        text NOT NULL,
            inp_sha256      text NOT NULL,
            junctions       integer NOT NULL,
            pipes           integer NOT NULL,
            origin_lat      double precision,
            origin_lon      double precision,
            metres_per_unit double precision NOT NULL DEFAULT 1,
            registered_at   timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE network_districts (
            network_id   text NOT NULL REFERENCES water_networks ON DELETE CASCADE,
            district_id  text NOT NULL,
            asset_id     text NOT NULL UNIQUE,
            nodes        jsonb NOT NULL,
            inlet_links  jsonb NOT NULL,
            PRIMARY KEY (network_id, district_id)
        );
        CREATE TABLE network_sensors (
            device_id    text PRIMARY KEY,  -- a devices row; no FK, devices reload on their own
            network_id   text NOT NULL,
            district_id  text NOT NULL,
            element_kind text NOT NULL CHECK (element_kind IN ('node', 'link')),
            element_id   text NOT NULL,
            metric       text NOT NULL,
            x            double precision,
            y            double precision,
            FOREIGN KEY (network_id, district_id) REFERENCES network_districts ON DELETE CASCADE
        );
        CREATE INDEX network_sensors_district_idx ON network_sensors (network_id, district_id);
        """,
    ),
    # Ground truth of simulated (or surveyed) leaks: where, how big, when.
    (
        31,
        "network leak ground truth",
        """
        CREATE TABLE network_leaks (
            network_id  text NOT NULL,
            asset_id    text NOT NULL,
            node        text NOT NULL,
            diameter_m  double precision NOT NULL,
            kind        text NOT NULL CHECK (kind IN ('abrupt', 'incipient')),
            start_at    timestamptz NOT NULL,
            peak_at     timestamptz NOT NULL,
            end_at      timestamptz,
            source      text NOT NULL DEFAULT 'simulator',
            PRIMARY KEY (network_id, node, start_at)
        );
        """,
    ),
    # Where the worker thinks a leak is: the ranked candidate nodes of a district at
    # each step its leak statistic is above threshold, with map coordinates.
    (
        32,
        "leak localisation candidates",
        """
        CREATE TABLE leak_candidates (
            ts        timestamptz NOT NULL,
            asset_id  text NOT NULL,
            rank      smallint NOT NULL,
            node      text NOT NULL,
            score     double precision NOT NULL,
            lat       double precision,
            lon       double precision,
            x         double precision,
            y         double precision,
            PRIMARY KEY (asset_id, ts, rank)
        );
        CREATE INDEX leak_candidates_ts_idx ON leak_candidates (ts);
        """,
    ),
]
