"""How public datasets' columns map onto catalogue metric names.

A shared contract: the replay (ingest) and the models that train on the same
files (models) must agree on it, and neither may import the other.
"""

from __future__ import annotations

#: GECCO 2018 Industrial Challenge column -> ``water_quality_station`` metric.
GECCO_COLUMNS: dict[str, str] = {
    "Tp": "temperature",
    "Cl": "chlorine_1",
    "pH": "ph",
    "Redox": "redox",
    "Leit": "conductivity",
    "Trueb": "turbidity",
    "Cl_2": "chlorine_2",
    "Fm": "flow_1",
    "Fm_2": "flow_2",
}
