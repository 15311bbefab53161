"""A registered district's layout (as storage.water_networks.district_layouts gives it),
built from a network spec without the database."""

from __future__ import annotations


def district_layout(spec) -> dict:
    return {
        "network_id": spec.network_id,
        "inp_file": spec.inp_file,
        "origin": spec.origin,
        "metres_per_unit": spec.metres_per_unit,
        "sensors": [
            (s.device_id, s.element_kind, s.element_id, s.metric, s.lat, s.lon)
            for s in spec.sensors
        ],
    }
