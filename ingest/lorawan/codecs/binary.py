"""Declarative binary codec: a device profile in YAML, not code.

Most city sensor nodes send fixed-layout binary frames. Rather than one
hand-written decoder per model, a profile lists the fields and this module
decodes (and, for tests and the simulator, encodes) them. Adding a device
family is a YAML review, not a code change.

The profile schema is in :mod:`ingest.lorawan.codecs.binary_profile`.

Integer fields are rounded to the decimals of ``scale`` and ``offset`` so a raw
231 with scale 0.01 gives 2.31, not 2.3100000000000001. Non-finite floats are
omitted with a warning, like ``invalid`` sentinels: float sensors commonly send
NaN for "no reading".
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from decimal import Decimal

from ingest.lorawan.codecs.base import DecodeResult
from ingest.lorawan.codecs.binary_profile import APP_PORTS, BinaryProfile, FieldSpec

__all__ = ["BinaryProfileCodec"]


def _decimals(number: float) -> int:
    exponent = Decimal(repr(number)).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _float_format(spec: FieldSpec) -> str:
    order = "<" if spec.endianness == "little" else ">"
    return order + ("f" if spec.size == 4 else "d")


class BinaryProfileCodec:
    """Decode frames laid out by a :class:`BinaryProfile`.

    Parameters
    ----------
    profile : BinaryProfile
        A validated profile, usually from :func:`load_profile`.
    """

    def __init__(self, profile: BinaryProfile) -> None:
        self._profile = profile
        self.name = f"profile:{profile.name}"
        self._digits = {
            f.name: max(_decimals(f.scale), _decimals(f.offset)) for f in profile.fields
        }

    @property
    def profile(self) -> BinaryProfile:
        """The profile this codec decodes."""
        return self._profile

    def _value(self, spec: FieldSpec, chunk: bytes) -> tuple[float | int | None, str | None]:
        if spec.kind == "f":
            (value,) = struct.unpack(_float_format(spec), chunk)
            if not math.isfinite(value):
                return None, f"{spec.key}: non-finite value {value!r} omitted"
            return value * spec.scale + spec.offset, None
        raw = int.from_bytes(chunk, spec.endianness, signed=spec.kind == "i")
        if spec.bits is not None:
            shift, width = spec.bits
            raw = (raw >> shift) & ((1 << width) - 1)
        if raw in spec.invalid:
            return None, f"{spec.key}: raw value {raw} means no reading; omitted"
        value = raw * spec.scale + spec.offset
        if isinstance(value, float):
            value = round(value, self._digits[spec.name])
        return value, None

    def decode(
        self,
        data: bytes,
        f_port: int,
        variables: Mapping[str, str] | None = None,
    ) -> DecodeResult:
        """Decode one frame; unknown ports and short frames are errors."""
        layout = self._profile.layout(f_port) if f_port in APP_PORTS else None
        if layout is None:
            expected = sorted(self._profile.fports) if self._profile.fports else "1-223"
            return DecodeResult.failure(
                f"fPort {f_port} is not handled by profile {self._profile.name} "
                f"(expects {expected})"
            )
        need = max(p.end for p in layout)
        if len(data) < need:
            return DecodeResult.failure(
                f"payload too short for profile {self._profile.name} on fPort {f_port}: "
                f"need {need} bytes, got {len(data)}"
            )
        result = DecodeResult()
        if len(data) > need:
            result.warnings.append(f"{len(data) - need} trailing bytes ignored")
        for placed in layout:
            value, warning = self._value(placed.spec, data[placed.pos : placed.end])
            if warning:
                result.warnings.append(warning)
            if value is not None:
                result.data[placed.spec.key] = value
        return result

    def encode(self, values: Mapping[str, float], f_port: int) -> bytes:
        """Encode values (by output key) into a frame for ``f_port``.

        The inverse of :meth:`decode`, for tests and the simulator. A missing
        value is written as the field's first ``invalid`` sentinel when it has
        one (so it decodes as "no reading").

        Raises
        ------
        ValueError
            Unknown port, a missing value without a sentinel, or a value that
            does not fit the field.
        """
        layout = self._profile.layout(f_port)
        if layout is None:
            raise ValueError(f"fPort {f_port} is not handled by profile {self._profile.name}")
        frame = bytearray(max(p.end for p in layout))
        for placed in layout:
            spec = placed.spec
            chunk = self._encode_field(spec, values.get(spec.key))
            if spec.bits is not None:
                # Bit fields share bytes with neighbours: OR them in.
                merged = int.from_bytes(frame[placed.pos : placed.end], spec.endianness)
                merged |= int.from_bytes(chunk, spec.endianness)
                chunk = merged.to_bytes(spec.size, spec.endianness)
            frame[placed.pos : placed.end] = chunk
        return bytes(frame)

    def _encode_field(self, spec: FieldSpec, value: float | None) -> bytes:
        if value is None:
            if not spec.invalid:
                raise ValueError(f"{spec.key}: missing value and no invalid sentinel")
            raw = min(spec.invalid)
        elif spec.kind == "f":
            return struct.pack(_float_format(spec), (value - spec.offset) / spec.scale)
        else:
            raw = round((value - spec.offset) / spec.scale)
        if spec.bits is not None:
            shift, width = spec.bits
            if not 0 <= raw < (1 << width):
                raise ValueError(f"{spec.key}: {value!r} does not fit {width} bits")
            raw <<= shift
            return raw.to_bytes(spec.size, spec.endianness)
        try:
            return raw.to_bytes(spec.size, spec.endianness, signed=spec.kind == "i")
        except OverflowError:
            raise ValueError(f"{spec.key}: {value!r} does not fit {spec.type}") from None
