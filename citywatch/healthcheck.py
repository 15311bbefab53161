"""Container healthchecks for the compose stack: ``python -m citywatch.healthcheck ...``.

Exit 0 when healthy, 1 with a reason on stderr otherwise. Standard library and
psycopg only, so the check itself starts fast and needs no service to be up.

    tcp HOST:PORT [HOST:PORT ...]       every address accepts a TCP connection
    fresh TABLE COLUMN SECONDS [BOUND]  the newest TABLE.COLUMN is at most SECONDS old
                                        (database from CITYWATCH_DATABASE_URL); with
                                        BOUND, only rows whose BOUND column is in the
                                        last SECONDS + 10 minutes are looked at
"""

from __future__ import annotations

import os
import socket
import sys


def tcp(addresses: list[str]) -> str | None:
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
        except OSError as exc:
            return f"{address} unreachable: {exc}"
    return None


# Slack for the BOUND column: device clocks and late uplinks put `ts` behind `ingested_at`.
BOUND_SLACK_S = 600


def fresh_query(table: str, column: str, seconds: float, bound: str | None = None):
    """The freshness query. BOUND (e.g. `ts` of the partitioned `readings`) limits the
    scan to recent partitions and an index range; unbounded, max(ingested_at) reads
    every row, which at ~8.6M readings a day outgrows the healthcheck's timeout."""
    from psycopg import sql

    query = sql.SQL("SELECT extract(epoch FROM now() - max({})) FROM {}").format(
        sql.Identifier(column), sql.Identifier(table)
    )
    if bound is None:
        return query
    # Both ends: a lower bound alone cannot skip the default partition (it holds the
    # future beyond the daily partitions too). The worker refuses readings > 5 min ahead.
    window = sql.Literal(f"{seconds + BOUND_SLACK_S:.0f} seconds")
    return query + sql.SQL(
        " WHERE {bound} > now() - {window}::interval AND {bound} < now() + interval '1 hour'"
    ).format(bound=sql.Identifier(bound), window=window)


def fresh(table: str, column: str, seconds: float, bound: str | None = None) -> str | None:
    import psycopg

    query = fresh_query(table, column, seconds, bound)
    with psycopg.connect(os.environ["CITYWATCH_DATABASE_URL"], connect_timeout=3) as conn:
        age = conn.execute(query).fetchone()[0]
    if age is None:
        return f"{table} is empty" + (f" (within the {bound} bound)" if bound else "")
    if float(age) > seconds:
        return f"newest {table}.{column} is {float(age):.0f} s old (limit {seconds:.0f} s)"
    return None


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "tcp":
        problem = tcp(argv[1:])
    elif len(argv) in (4, 5) and argv[0] == "fresh":
        problem = fresh(argv[1], argv[2], float(argv[3]), *argv[4:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
