"""A public AI register: one entry per model in production use, as a static site plus JSON.

Amsterdam's and Helsinki's public algorithm registers grew into the
Algorithmic Transparency Standard (algoritmeregister.org, v0.3.1, with the UK
recording standard mapped onto it). Entries here use that standard's attribute
names (``name``, ``organization``, ``department``, ``contact_email``,
``description_short``, ``status``, ``goal``, ``impact``, ``risks``,
``training_data``, ``source_data``, ``methods_and_models``, ``performance``,
``monitoring``, ``human_intervention``, ``rollback``, ...), so a city can copy
them into its own register. What the standard has no field for (asset types,
the data's date range and sha256, the feature list, held-out metrics, the
change history from the promotions log) sits under ``citywatch``.

Entries are built from the database registry's rows (the model card and the
promotion log) and nothing else, so the register says what runs.
"""

from __future__ import annotations

import html
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

__all__ = ["STANDARD", "STANDARD_VERSION", "build_entries", "write_site"]

STANDARD = "Algorithmic Transparency Standard (algoritmeregister.org)"
STANDARD_VERSION = "0.3.1"
_NAMESPACE = uuid.UUID("6f1c3b1e-8d0a-4f5e-9c51-2d7a0c1f9e42")  # stable ids per model version

HUMAN_INTERVENTION = (
    "No action is automatic. An alert goes to a maintenance crew's inbox; a crew member "
    "acknowledges it, inspects the asset and closes the alert as 'fault confirmed' or "
    "'false alarm'. Engineers can close or reassign any alert. Those outcomes become "
    "training labels, and a new model version only scores once an engineer promotes it "
    "(`citywatch model promote`); `citywatch model rollback` restores the previous one."
)
ROLLBACK = (
    "`citywatch model rollback` makes the previous champion score again without stopping "
    "the stream; every change is recorded in the promotions log shown below."
)
OBJECTION = (
    "Alerts concern city assets, not people. Crews can mark any alert a false alarm; "
    "questions and objections go to the contact address of this entry."
)


def _day(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)[:10]


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime | date) else value


def _history(promotions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "at": _iso(p.get("at")),
            "role": p.get("role"),
            "action": p.get("action"),
            "version": p.get("version"),
            "previous": p.get("previous"),
            "actor": p.get("actor"),
        }
        for p in promotions
    ]


def _heldout(metrics: Mapping[str, Any]) -> dict[str, Any]:
    keep = (
        *("auc", "average_precision", "precision", "recall", "failures_caught", "threshold"),
        "remaining_life",
    )
    return {
        t: {k: m[k] for k in keep if k in m} if isinstance(m, Mapping) else m
        for t, m in metrics.items()
    }


def _num(v: Any, digits: int = 2) -> str:
    # Card metrics are JSON: NaN was stored as null.
    return f"{v:.{digits}f}" if isinstance(v, int | float) else "n/a"


def _performance_text(metrics: Mapping[str, Any], evidence: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for t, m in _heldout(metrics).items():
        if isinstance(m, Mapping) and "auc" in m:
            parts.append(
                f"{t}: held-out AUC {_num(m['auc'], 3)}, precision {_num(m.get('precision'))}"
                f", recall {_num(m.get('recall'))} at the alert threshold"
            )
            rul = m.get("remaining_life")
            if isinstance(rul, Mapping) and "coverage" in rul:
                parts.append(
                    f"{t} time to failure: 10-90 % interval covers {_num(rul['coverage'])} of "
                    f"held-out readings ({_num(rul.get('coverage_failing_within_cap'))} of those "
                    "failing within its horizon)"
                )
    for e in evidence:
        parts.append(_evidence_text(e))
    return "; ".join(parts) or "no held-out metrics recorded"


def _evidence_text(e: Mapping[str, Any]) -> str:
    keys = [k for k in ("f1", "far", "mar", "rmse", "auc") if e.get(k) is not None]
    figures = ", ".join(f"{k} {_num(e[k], 3)}" for k in keys)
    if isinstance(e.get("interval"), Mapping):
        figures += f", interval coverage {_num(e['interval'].get('coverage'))}"
    where = f"{e.get('dataset', '?')} ({e.get('protocol', 'held out')})"
    return f"{where}: {figures} [{e.get('command', '')}]"


def build_entries(
    models: Sequence[Mapping[str, Any]],
    *,
    organization: str,
    department: str,
    contact_email: str,
    area: str,
    website: str | None = None,
    codebase_url: str | None = None,
    evidence: Sequence[Mapping[str, Any]] = (),
    published: date | None = None,
) -> list[dict[str, Any]]:
    """Register entries for the models in production use.

    Parameters
    ----------
    models : sequence of mapping
        Registry rows with ``card`` and ``promotions`` (as
        :meth:`models.catalog.ModelCatalog.show` returns them); only those
        whose ``role`` is ``champion`` (operational) or ``challenger``
        (evaluation, shadow scoring) become entries.
    organization, department, contact_email, area, website, codebase_url : str
        Who is responsible, where, how to reach them, and where the code is.
    evidence : sequence of mapping
        ``citywatch bench model --json`` results on public benchmarks,
        quoted with their commands under ``performance``.
    published : date, optional
        Publication date (default today, UTC).

    Returns
    -------
    list of dict
        The supervised failure-risk model of each active version, and the
        cold-start anomaly model the champion runs beside it.
    """
    today = (published or datetime.now(UTC).date()).isoformat()
    base = {
        "standard_version": STANDARD_VERSION,
        "lang": "en",
        "publication_date": today,
        "organization": organization,
        "department": department,
        "contact_email": contact_email,
        "area": area,
        "website": website,
        "domain": "environment, spacial planning and water",
        "decision_making_process": (
            "Planned and reactive maintenance of city infrastructure (water pumps and mains, "
            "bridges, lifts and escalators, streetlights)."
        ),
        "impact": (
            "Crews visit assets earlier or later; no decision about a person is taken. "
            "A missed alert can mean a later repair; a false one an unneeded visit."
        ),
        "risk_category": "minimal risk",
        "type": "predictive",
        "human_intervention": HUMAN_INTERVENTION,
        "objection_procedure": OBJECTION,
        "rollback": ROLLBACK,
        "codebase_url": codebase_url,
    }
    entries = []
    for row in models:
        role = row.get("role")
        if role not in ("champion", "challenger"):
            continue
        card = row.get("card") or {}
        version = row["version"]
        data = card.get("training_data") or {}
        history = _history(row.get("promotions") or [])
        changed = max([h["at"] for h in history if h["at"]] or [_iso(row.get("created_at"))])
        common = {
            **base,
            "status": "operational" if role == "champion" else "evaluation",
            "last_change_date": _day(changed) or today,
            "contact_name": card.get("owner") or row.get("owner"),
        }
        citywatch = {
            "model_version": version,
            "role": role,
            "owner": card.get("owner") or row.get("owner"),
            "asset_types": list(row.get("asset_types") or card.get("features", {}).keys()),
            "data": {
                "from": _iso(row.get("data_from")) or data.get("ts_min"),
                "to": _iso(row.get("data_to")) or data.get("ts_max"),
                "sha256": row.get("data_sha256") or data.get("sha256"),
                "rows": data.get("rows"),
                "assets": data.get("assets"),
                "failures": data.get("failures"),
                "split": data.get("split"),
            },
            "change_history": history,
            "scoring_policy": card.get("scoring_policy", {}),
        }
        policies = card.get("scoring_policy") or {}
        supervised = [t for t, p in policies.items() if p.get("kind") == "failure_risk"]
        entries.append(
            {
                **common,
                "uuid": str(uuid.uuid5(_NAMESPACE, f"risk/{version}")),
                "name": f"citywatch failure risk ({role})",
                "description_short": (
                    "Scores each sensor reading with the probability that the asset fails soon."
                ),
                "goal": card.get("intended_use"),
                "risks": card.get("limits"),
                "training_data": (
                    f"{data.get('rows')} readings of {data.get('assets')} assets with "
                    f"{data.get('failures')} labelled failures, {citywatch['data']['from']} to "
                    f"{citywatch['data']['to']} (sha256 {citywatch['data']['sha256']})"
                ),
                "source_data": "Sensor readings (LoRaWAN/IoT), crew outcomes of closed alerts.",
                "data_bias": (
                    "Labels exist only where crews inspected; assets never alerted on are "
                    "under-represented among the failures."
                ),
                "description": (
                    "Per-device rolling features (window statistics, deviations from the "
                    "device's own baseline) feed one LightGBM classifier per asset type, "
                    "calibrated and thresholded on held-out assets. "
                    + (
                        f"It raises the alerts of: {', '.join(sorted(supervised))}."
                        if supervised
                        else "No asset type has enough labels yet: it scores in the "
                        "background and the anomaly model alerts."
                    )
                ),
                "algorithm_type": "self-learning",
                "methods_and_models": str((card.get("model") or {}).get("kind")),
                "performance": _performance_text(card.get("metrics") or {}, evidence),
                "monitoring": (
                    "Feature drift (PSI against the training data) per asset type; crew "
                    "outcomes per model version; challenger compared with champion on the "
                    "same readings (`citywatch model compare`)."
                ),
                "alternatives_considered": "The cold-start anomaly model below.",
                "citywatch": {
                    **citywatch,
                    "kind": "failure_risk",
                    "features": card.get("features", {}),
                    "metrics_heldout": _heldout(card.get("metrics") or {}),
                    "thresholds": card.get("thresholds", {}),
                    "limits_and_failure_modes": card.get("limits"),
                },
            }
        )
        health = card.get("health_specs") or {}
        if role == "champion" and health:
            anomaly_types = sorted(t for t, p in policies.items() if p.get("kind") == "anomaly")
            entries.append(
                {
                    **common,
                    "uuid": str(uuid.uuid5(_NAMESPACE, f"health/{version}")),
                    "name": "citywatch cold-start anomaly score",
                    "description_short": (
                        "Learns each device's healthy baseline from its first readings and "
                        "scores how far it drifts from it."
                    ),
                    "goal": (
                        "Alerts from the first weeks after sensors are installed, before any "
                        "failure labels exist."
                    ),
                    "risks": (
                        "A device that is already faulty while it learns its baseline treats "
                        "that as normal; a changed operating point (new pump setting, season) "
                        "looks anomalous until the baseline is relearned after maintenance."
                    ),
                    "training_data": (
                        "None shared: every device learns only from its own first readings "
                        "(warm-up) after installation or maintenance."
                    ),
                    "source_data": "Sensor readings (LoRaWAN/IoT) of the device itself.",
                    "description": (
                        "Each metric is smoothed with an exponentially weighted mean; after the "
                        "warm-up the device's mean and spread are frozen and every reading is "
                        "scored by its distance from them, divided by a control limit set on "
                        "the warm-up readings (1.0 = at the limit). "
                        + (
                            f"It raises the alerts of: {', '.join(anomaly_types)}."
                            if anomaly_types
                            else "Every asset type has enough labels for the failure risk; "
                            "the anomaly score is stored and shown beside it."
                        )
                    ),
                    "algorithm_type": "rule-based",
                    "methods_and_models": "control chart on baseline z-scores (models.health)",
                    "performance": "; ".join(_evidence_text(e) for e in evidence)
                    or "see docs/models.md",
                    "monitoring": "Alert outcomes per model kind in the crew inbox.",
                    "alternatives_considered": (
                        "river HalfSpaceTrees (online isolation), scored lower on SKAB."
                    ),
                    "citywatch": {
                        **citywatch,
                        "kind": "anomaly",
                        "asset_types": sorted(health),
                        "features": {t: list(h.get("metrics", [])) for t, h in health.items()},
                        "health_specs": health,
                        "limits_and_failure_modes": (
                            "Needs `warmup` healthy readings per device before it scores."
                        ),
                    },
                }
            )
    return entries


# -- the static site ----------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#1b1b1b;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}
.card{border:1px solid #ccd;border-radius:.5rem;padding:1rem;margin:1rem 0}
.status{display:inline-block;padding:.1rem .5rem;border-radius:1rem;background:#e6f0ff}
dl{display:grid;grid-template-columns:14rem 1fr;gap:.3rem 1rem}dt{font-weight:600}
dd{margin:0;overflow-wrap:anywhere}table{border-collapse:collapse}
td,th{border:1px solid #ccd;padding:.2rem .5rem;font-size:.9rem}
"""

_FIELDS = (
    "name",
    "status",
    "description_short",
    "organization",
    "department",
    "contact_email",
    "contact_name",
    "area",
    "goal",
    "impact",
    "risks",
    "risk_category",
    "training_data",
    "source_data",
    "data_bias",
    "description",
    "algorithm_type",
    "methods_and_models",
    "performance",
    "monitoring",
    "human_intervention",
    "objection_procedure",
    "rollback",
    "publication_date",
    "last_change_date",
    "standard_version",
)


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _entry_html(e: Mapping[str, Any]) -> str:
    e_ = html.escape
    rows = "".join(
        f"<dt>{e_(k.replace('_', ' '))}</dt><dd data-field='{k}'>{e_(str(e.get(k) or '-'))}</dd>"
        for k in _FIELDS
    )
    cw = e["citywatch"]
    data = cw["data"]
    history = "".join(
        f"<tr><td>{e_(str(h['at']))}</td><td>{e_(str(h['role']))}</td>"
        f"<td>{e_(str(h['action']))}</td><td>{e_(str(h['version']))}</td>"
        f"<td>{e_(str(h['actor']))}</td></tr>"
        for h in cw["change_history"]
    )
    details = (
        f"<dt>model version</dt><dd data-field='model_version'>{e_(cw['model_version'])}</dd>"
        f"<dt>asset types</dt><dd data-field='asset_types'>{e_(', '.join(cw['asset_types']))}</dd>"
        f"<dt>data</dt><dd data-field='data'>{e_(str(data['from']))} to {e_(str(data['to']))}, "
        f"sha256 <code>{e_(str(data['sha256']))}</code></dd>"
    )
    return (
        f"<article class='card' id='{e_(e['uuid'])}'><h2>{e_(e['name'])} "
        f"<span class='status'>{e_(e['status'])}</span></h2><dl>{rows}{details}</dl>"
        "<h3>Change history</h3><table class='history'><tr><th>at</th><th>role</th>"
        f"<th>action</th><th>version</th><th>by</th></tr>{history}</table>"
        f"<p><a href='{e_(e['uuid'])}.json'>JSON</a></p></article>"
    )


def write_site(entries: Sequence[Mapping[str, Any]], out: Path, *, title: str) -> list[Path]:
    """Write ``index.html``, ``register.json`` and one ``<uuid>.json`` per entry to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    register = {"standard": STANDARD, "standard_version": STANDARD_VERSION, "entries": entries}
    path = out / "register.json"
    path.write_text(json.dumps(register, indent=2, default=str) + "\n")
    written.append(path)
    for e in entries:
        path = out / f"{e['uuid']}.json"
        path.write_text(json.dumps(e, indent=2, default=str) + "\n")
        written.append(path)
    body = (
        f"<h1>{html.escape(title)}</h1><p>Models in production use, described with the "
        f"field names of the {html.escape(STANDARD)} v{STANDARD_VERSION}. "
        "<a href='register.json'>All entries as JSON</a>.</p>"
        + ("".join(_entry_html(e) for e in entries) or "<p id='empty'>No model in use.</p>")
    )
    path = out / "index.html"
    path.write_text(_page(title, body))
    written.append(path)
    return written
