"""All dashboards, their committed JSON, and every SQL query they hold."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.models import dashboard as dm

from . import asset, fleet, models, networks, pipeline, water_quality
from .sdk import dump

JSON_DIR = Path(__file__).resolve().parent / "json"

BUILDERS: dict[str, Callable[[], dm.Dashboard]] = {
    "fleet-overview": fleet.build,
    "asset-detail": asset.build,
    "pipeline-health": pipeline.build,
    "model-monitoring": models.build,
    "water-quality": water_quality.build,
    "water-networks": networks.build,
}


def render_all() -> dict[str, str]:
    """File name -> JSON text, exactly as committed under dashboards/json/."""
    return {f"{name}.json": dump(build()) for name, build in BUILDERS.items()}


def write_json(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def drift(directory: Path = JSON_DIR) -> list[str]:
    """Files whose committed JSON differs from what the code builds (or that are missing)."""
    stale = []
    for name, text in render_all().items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            stale.append(name)
    return stale


@dataclass(frozen=True)
class Query:
    """One SQL query of a dashboard: a panel target, an annotation or a variable."""

    dashboard: str
    kind: str  # panel | annotation | variable
    title: str
    ref_id: str
    sql: str
    format: str
    max_data_points: int | None = None
    min_interval: str | None = None
    panel_type: str = ""
    panel: int = -1  # position in the dashboard, the panel's identity


def queries(board: dict[str, Any]) -> Iterator[Query]:
    uid = board["uid"]
    for index, panel in enumerate(board.get("panels", [])):
        for target in panel.get("targets", []):
            yield Query(
                uid,
                "panel",
                panel["title"],
                target["refId"],
                target["rawSql"],
                target.get("format", "time_series"),
                panel.get("maxDataPoints"),
                panel.get("interval"),
                panel.get("type", ""),
                index,
            )
    for anno in (board.get("annotations") or {}).get("list", []):
        target = anno.get("target") or {}
        if "rawSql" in target:
            yield Query(uid, "annotation", anno["name"], target["refId"], target["rawSql"], "table")
    for var in (board.get("templating") or {}).get("list", []):
        if var.get("type") == "query":
            yield Query(uid, "variable", var["name"], "var", var["query"], "table")


def load_boards(directory: Path = JSON_DIR) -> list[dict[str, Any]]:
    import json

    return [json.loads((directory / f"{name}.json").read_text()) for name in BUILDERS]
