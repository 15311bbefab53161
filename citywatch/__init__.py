"""citywatch: streaming predictive maintenance for city infrastructure.

The package ``citywatch`` is the top layer: the CLI (``cli``, ``commands``),
the embedded stack (``stack``) and the containers' healthchecks. No other
package imports it. Below it: ``services`` (what the commands share), ``crew``
and ``dashboards``, ``ingest`` and ``streams``, ``models`` and ``networks``,
``storage``, and ``core`` at the bottom (README, "How it fits together").
"""

__version__ = "0.1.0"
