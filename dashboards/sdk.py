"""grafana-foundation-sdk glue: the PostgreSQL query type the SDK lacks, JSON in and out.

The SDK (Grafana 11.6 build) ships dataquery types for Prometheus, Loki, ... but
none for Grafana's PostgreSQL datasource, and its ``AnnotationTarget`` only has
the fields of the built-in Grafana datasource. The SDK's documented extension
point is a custom ``Dataquery`` registered with the cog runtime, so we add one
(``SQLQuery``) and an annotation target that carries ``rawSql``; decoding
restores both, so dashboard JSON round-trips through the SDK without loss.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import dashboard as dm

DATASOURCE_TYPE = "grafana-postgresql-datasource"
DATASOURCE_UID = "citywatch-pg"
Format = Literal["time_series", "table"]


def datasource_ref() -> dm.DataSourceRef:
    return dm.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)


class SQLQuery(cogvariants.Dataquery):
    """A raw-SQL target of Grafana's PostgreSQL datasource (code editor mode)."""

    def __init__(
        self,
        ref_id: str = "A",
        raw_sql: str = "",
        format_val: Format = "time_series",
        hide: bool | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format_val = format_val
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
            "editorMode": "code",
            "format": self.format_val,
            "rawQuery": True,
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(
            ref_id=data.get("refId", "A"),
            raw_sql=data.get("rawSql", ""),
            format_val=data.get("format", "time_series"),
            hide=data.get("hide"),
        )


class SQL(cogbuilder.Builder[SQLQuery]):
    """Builder for :class:`SQLQuery`, in the SDK's fluent style."""

    def __init__(self, raw_sql: str, ref_id: str = "A") -> None:
        self._internal = SQLQuery(ref_id=ref_id, raw_sql=raw_sql)

    def build(self) -> SQLQuery:
        return self._internal

    def format(self, format_val: Format) -> Self:
        self._internal.format_val = format_val
        return self

    def table(self) -> Self:
        return self.format("table")


class SQLAnnotationTarget(dm.AnnotationTarget):
    """An annotation query's target with the SQL datasource's fields."""

    def __init__(self, raw_sql: str = "", ref_id: str = "Anno") -> None:
        super().__init__(limit=100, match_any=False, tags=[], type_val="tags")
        self.raw_sql = raw_sql
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        payload.update(
            editorMode="code", format="table", rawQuery=True, rawSql=self.raw_sql, refId=self.ref_id
        )
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(raw_sql=data.get("rawSql", ""), ref_id=data.get("refId", "Anno"))


class SQLAnnotation(cogbuilder.Builder[SQLAnnotationTarget]):
    def __init__(self, raw_sql: str) -> None:
        self._internal = SQLAnnotationTarget(raw_sql)

    def build(self) -> SQLAnnotationTarget:
        return self._internal


def _register() -> None:
    register_default_plugins()
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=DATASOURCE_TYPE, from_json_hook=SQLQuery.from_json)
    )


_register()


def to_json(board: dm.Dashboard) -> dict[str, Any]:
    """Plain JSON (dicts and lists) of a built dashboard."""
    return json.loads(json.dumps(board, cls=JSONEncoder))


def dump(board: dm.Dashboard) -> str:
    """The committed file's text: stable key order, 2-space indent, trailing newline."""
    return json.dumps(to_json(board), indent=2, sort_keys=True) + "\n"


def from_json(data: dict[str, Any]) -> dm.Dashboard:
    """Decode dashboard JSON with the SDK, restoring our SQL annotation targets."""
    board = dm.Dashboard.from_json(data)
    raw = (data.get("annotations") or {}).get("list") or []
    annotations = board.annotations.list_val if board.annotations else None
    for decoded, source in zip(annotations or [], raw, strict=True):
        target = source.get("target") or {}
        if "rawSql" in target:
            decoded.target = SQLAnnotationTarget.from_json(target)
    return board
