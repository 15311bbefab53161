"""citywatch: streaming predictive maintenance for city infrastructure.

The package ``citywatch`` holds what every layer shares (settings, the asset
catalogue, the reading wire format), the embedded stack and the CLI.
The layers live beside it: ``ingest`` (sources into Kafka), ``streams`` (the
Faust worker), ``models`` (features and risk models), ``storage`` (PostgreSQL /
TimescaleDB) and ``dashboards`` (Grafana as code).
"""

__version__ = "0.1.0"
