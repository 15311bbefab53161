"""Cayenne Low Power Payload (LPP) codec.

A frame is a sequence of ``channel (1 byte) | type (1 byte) | value`` records,
values big-endian ("MSB" in the spec). Several channels, and several types,
share one frame.

Output keys are ``<type>_<channel>``, e.g. ``temperature_3``. Scalar types map
to a number; multi-axis types map to a small object:

========  =====================  ====  ======  ======================================
LPP id    key                    size  signed  value
========  =====================  ====  ======  ======================================
0         ``digital_in``         1     no      int
1         ``digital_out``        1     no      int
2         ``analog_in``          2     yes     0.01
3         ``analog_out``         2     yes     0.01
100       ``generic``            4     no      int (unsigned 32-bit)
101       ``luminosity``         2     no      1 lux
102       ``presence``           1     no      int
103       ``temperature``        2     yes     0.1 degC
104       ``relative_humidity``  1     no      0.5 %
113       ``accelerometer``      6     yes     ``{x, y, z}`` 0.001 G
115       ``barometric_pressure``  2   no      0.1 hPa
116       ``voltage``            2     no      0.01 V
117       ``current``            2     no      0.001 A
118       ``frequency``          4     no      1 Hz
120       ``percentage``         1     no      1 %
121       ``altitude``           2     yes     1 m
125       ``concentration``      2     no      1 ppm
128       ``power``              2     no      1 W
130       ``distance``           4     no      0.001 m
131       ``energy``             4     no      0.001 kWh
132       ``direction``          2     no      1 deg
133       ``unix_time``          4     no      int, seconds since the epoch
134       ``gyrometer``          6     yes     ``{x, y, z}`` 0.01 deg/s
135       ``colour``             3     no      ``{r, g, b}`` 0-255
136       ``gps``                9     yes     ``{latitude, longitude, altitude}``
                                               0.0001 deg, 0.0001 deg, 0.01 m (24-bit)
142       ``switch``             1     no      int (0/1)
========  =====================  ====  ======  ======================================

Naming: the twelve original types use the key names of The Things Stack's
built-in CayenneLPP formatter, so a TTS ``decoded_payload`` and this codec give
the same keys for the same bytes (a device's metric map works for both). The
extended types use ElectronicCats' names, except ``unix_time`` (theirs is the
ambiguous ``time``).

Sources: the myDevices LPP table and examples (github.com/myDevicesIoT/CayenneLPP
README); extended type ids, sizes and multipliers from ElectronicCats/CayenneLPP
``src/CayenneLPP.h`` (2025). Voltage and current are decoded unsigned as every
published table says; ElectronicCats' encoder started writing them signed in
August 2025, which only differs for negative values. Polyline (240) is
variable-length and not supported: it fails the frame with an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ingest.lorawan.codecs.base import DecodeResult

__all__ = ["LPP_TYPES", "CayenneLppCodec", "LppType", "encode_lpp"]

_SCALAR = "scalar"
_XYZ = "xyz"
_GPS = "gps"
_RGB = "rgb"


@dataclass(frozen=True)
class LppType:
    """One LPP data type: its id, output key, byte size, signedness and scale.

    ``divisor`` is what the raw integer is divided by; 1 means the value stays
    an ``int``. For GPS the divisors are per component.
    """

    type_id: int
    key: str
    size: int
    signed: bool
    divisor: int | tuple[int, ...] = 1
    shape: str = _SCALAR


LPP_TYPES: dict[int, LppType] = {
    t.type_id: t
    for t in (
        LppType(0, "digital_in", 1, False),
        LppType(1, "digital_out", 1, False),
        LppType(2, "analog_in", 2, True, 100),
        LppType(3, "analog_out", 2, True, 100),
        LppType(100, "generic", 4, False),
        LppType(101, "luminosity", 2, False),
        LppType(102, "presence", 1, False),
        LppType(103, "temperature", 2, True, 10),
        LppType(104, "relative_humidity", 1, False, 2),
        LppType(113, "accelerometer", 6, True, 1000, _XYZ),
        LppType(115, "barometric_pressure", 2, False, 10),
        LppType(116, "voltage", 2, False, 100),
        LppType(117, "current", 2, False, 1000),
        LppType(118, "frequency", 4, False),
        LppType(120, "percentage", 1, False),
        LppType(121, "altitude", 2, True),
        LppType(125, "concentration", 2, False),
        LppType(128, "power", 2, False),
        LppType(130, "distance", 4, False, 1000),
        LppType(131, "energy", 4, False, 1000),
        LppType(132, "direction", 2, False),
        LppType(133, "unix_time", 4, False),
        LppType(134, "gyrometer", 6, True, 100, _XYZ),
        LppType(135, "colour", 3, False, 1, _RGB),
        LppType(136, "gps", 9, True, (10000, 10000, 100), _GPS),
        LppType(142, "switch", 1, False),
    )
}

_BY_KEY: dict[str, LppType] = {t.key: t for t in LPP_TYPES.values()}
_AXES = ("x", "y", "z")
_GPS_PARTS = ("latitude", "longitude", "altitude")
_RGB_PARTS = ("r", "g", "b")


def _scale(raw: int, divisor: int) -> int | float:
    # int / int is correctly rounded, so 272 / 10 gives exactly the float 27.2
    # (multiplying by 0.1 would give 27.200000000000003).
    return raw if divisor == 1 else raw / divisor


def _read(chunk: bytes, signed: bool) -> int:
    return int.from_bytes(chunk, "big", signed=signed)


def _decode_value(spec: LppType, chunk: bytes) -> Any:
    if spec.shape == _XYZ:
        assert isinstance(spec.divisor, int)
        return {
            axis: _scale(_read(chunk[2 * i : 2 * i + 2], True), spec.divisor)
            for i, axis in enumerate(_AXES)
        }
    if spec.shape == _GPS:
        assert isinstance(spec.divisor, tuple)
        return {
            part: _scale(_read(chunk[3 * i : 3 * i + 3], True), spec.divisor[i])
            for i, part in enumerate(_GPS_PARTS)
        }
    if spec.shape == _RGB:
        return dict(zip(_RGB_PARTS, chunk, strict=True))
    assert isinstance(spec.divisor, int)
    return _scale(_read(chunk, spec.signed), spec.divisor)


class CayenneLppCodec:
    """Decode Cayenne LPP frames (any fPort).

    Examples
    --------
    >>> CayenneLppCodec().decode(bytes.fromhex("03670110056700FF"), 1).data
    {'temperature_3': 27.2, 'temperature_5': 25.5}
    """

    name = "cayenne_lpp"

    def decode(
        self,
        data: bytes,
        f_port: int,
        variables: Mapping[str, str] | None = None,
    ) -> DecodeResult:
        """Decode one LPP frame; see the module docstring for the output keys."""
        result = DecodeResult()
        if not data:
            result.warnings.append("empty payload")
            return result
        pos = 0
        end = len(data)
        while pos < end:
            if end - pos < 2:
                result.errors.append(f"truncated record header at byte {pos}")
                break
            channel, type_id = data[pos], data[pos + 1]
            spec = LPP_TYPES.get(type_id)
            if spec is None:
                # Record sizes depend on the type, so after an unknown type the
                # rest of the frame cannot be parsed: fail the frame.
                result.errors.append(f"unknown LPP type {type_id} at byte {pos + 1}")
                break
            start = pos + 2
            if start + spec.size > end:
                result.errors.append(
                    f"truncated {spec.key} value on channel {channel}: "
                    f"need {spec.size} bytes, {end - start} left"
                )
                break
            key = f"{spec.key}_{channel}"
            if key in result.data:
                result.warnings.append(f"{key} appears twice; the last value wins")
            result.data[key] = _decode_value(spec, data[start : start + spec.size])
            pos = start + spec.size
        return result


def _encode_int(value: float, divisor: int, size: int, signed: bool, key: str) -> bytes:
    try:
        return round(value * divisor).to_bytes(size, "big", signed=signed)
    except (OverflowError, TypeError):
        raise ValueError(f"{key}: {value!r} does not fit the LPP encoding") from None


def encode_lpp(values: Mapping[str, Any]) -> bytes:
    """Encode decoded-style values back to an LPP frame (inverse of ``decode``).

    Meant for tests and the simulator, which are trusted callers, so bad input
    raises ``ValueError`` rather than being reported as data.

    Parameters
    ----------
    values : mapping
        Keys ``<type>_<channel>`` as produced by :class:`CayenneLppCodec`.

    Returns
    -------
    bytes
        Records in the mapping's iteration order.
    """
    out = bytearray()
    for name, value in values.items():
        type_key, sep, channel_text = name.rpartition("_")
        spec = _BY_KEY.get(type_key)
        if not sep or spec is None or not channel_text.isdigit() or int(channel_text) > 255:
            raise ValueError(f"not an LPP key: {name!r}")
        out += bytes((int(channel_text), spec.type_id))
        if spec.shape == _XYZ:
            assert isinstance(spec.divisor, int)
            for axis in _AXES:
                out += _encode_int(value[axis], spec.divisor, 2, True, name)
        elif spec.shape == _GPS:
            assert isinstance(spec.divisor, tuple)
            for part, divisor in zip(_GPS_PARTS, spec.divisor, strict=True):
                out += _encode_int(value[part], divisor, 3, True, name)
        elif spec.shape == _RGB:
            for part in _RGB_PARTS:
                out += _encode_int(value[part], 1, 1, False, name)
        else:
            assert isinstance(spec.divisor, int)
            out += _encode_int(value, spec.divisor, spec.size, spec.signed, name)
    return bytes(out)
