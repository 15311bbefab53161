"""Panel factories shared by the dashboards: one look, one datasource, bounded points."""

from __future__ import annotations

from grafana_foundation_sdk.builders import barchart, dashboard, geomap, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from .sdk import SQL, datasource_ref

# Grafana computes $__interval as range / maxDataPoints; capping the points caps the
# rows every gap-filled query returns, whether the range is an hour or a year.
MAX_POINTS = 300
MIN_INTERVAL = "10s"
REFRESH = "30s"


def risk_thresholds() -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps(
            [
                dm.Threshold(value=None, color="green"),
                dm.Threshold(value=0.5, color="orange"),
                dm.Threshold(value=0.8, color="red"),
            ]
        )
    )


def _legend() -> cb.VizLegendOptions:
    return (
        cb.VizLegendOptions()
        .show_legend(True)
        .display_mode(cm.LegendDisplayMode.LIST)
        .placement(cm.LegendPlacement.BOTTOM)
    )


def time_series(
    title: str, description: str, *queries: SQL, unit: str = "short", w: int = 12, h: int = 8
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .unit(unit)
        .max_data_points(MAX_POINTS)
        .interval(MIN_INTERVAL)
        .legend(_legend())
        .line_width(1)
        .fill_opacity(10)
        .span(w)
        .height(h)
    )
    for query in queries:
        panel = panel.with_target(query)
    return panel


def bars(
    title: str, description: str, query: SQL, *, unit: str = "short", w: int = 12, h: int = 8
) -> timeseries.Panel:
    """Counts per bucket drawn as stacked bars."""
    return (
        time_series(title, description, query, unit=unit, w=w, h=h)
        .draw_style(cm.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    )


def table_panel(title: str, description: str, query: SQL, *, w: int = 12, h: int = 8):
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .with_target(query.table())
        .span(w)
        .height(h)
    )


def stat_panel(title: str, description: str, query: SQL, *, unit: str = "short", w: int = 6):
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .with_target(query.table())
        .unit(unit)
        .span(w)
        .height(4)
    )


def bar_chart(
    title: str, description: str, query: SQL, x_field: str, *, horizontal: bool, w: int = 12
) -> barchart.Panel:
    return (
        barchart.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .with_target(query.table())
        .x_field(x_field)
        .orientation(cm.VizOrientation.HORIZONTAL if horizontal else cm.VizOrientation.VERTICAL)
        .span(w)
        .height(8)
    )


def geomap_panel(title: str, description: str, query: SQL, *, w: int = 12, h: int = 12):
    """Markers at latitude/longitude columns, coloured by the ``risk`` column."""
    markers = (
        cb.MapLayerOptions()
        .type("markers")
        .name("assets")
        .location(cb.FrameGeometrySource().mode(cm.FrameGeometrySourceMode.COORDS))
        .config(
            {
                "showLegend": True,
                "style": {
                    "color": {"field": "risk", "fixed": "green"},
                    "size": {"fixed": 6},
                    "opacity": 0.8,
                },
            }
        )
        .tooltip(True)
    )
    return (
        geomap.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .with_target(query.table())
        .view(geomap.MapViewConfig().id("fit"))
        .basemap(cb.MapLayerOptions().type("default").name("basemap"))
        .layers([markers])
        .thresholds(risk_thresholds())
        .color_scheme(dashboard.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        .min(0)
        .max(1)
        .span(w)
        .height(h)
    )


def new_dashboard(uid: str, title: str, description: str, tags: list[str]) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["citywatch", *tags])
        .time("now-1h", "now")
        .refresh(REFRESH)
        .timezone("browser")
        .editable()
    )
