"""Container healthchecks for the compose stack: ``python -m citywatch.healthcheck ...``.

Exit 0 when healthy, 1 with a reason on stderr otherwise. Standard library and
psycopg only, so the check itself starts fast and needs no service to be up.

    tcp HOST:PORT [HOST:PORT ...]       every address accepts a TCP connection
    fresh TABLE COLUMN SECONDS          the newest TABLE.COLUMN is at most SECONDS old
                                        (database from CITYWATCH_DATABASE_URL)
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


def fresh(table: str, column: str, seconds: float) -> str | None:
    import psycopg
    from psycopg import sql

    query = sql.SQL("SELECT extract(epoch FROM now() - max({})) FROM {}").format(
        sql.Identifier(column), sql.Identifier(table)
    )
    with psycopg.connect(os.environ["CITYWATCH_DATABASE_URL"], connect_timeout=3) as conn:
        age = conn.execute(query).fetchone()[0]
    if age is None:
        return f"{table} is empty"
    if float(age) > seconds:
        return f"newest {table}.{column} is {float(age):.0f} s old (limit {seconds:.0f} s)"
    return None


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "tcp":
        problem = tcp(argv[1:])
    elif len(argv) == 4 and argv[0] == "fresh":
        problem = fresh(argv[1], argv[2], float(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
