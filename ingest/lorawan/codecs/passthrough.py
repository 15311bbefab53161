"""Passthrough codec: use the object the network server already decoded.

ChirpStack puts the device-profile codec's output in ``object``; The Things
Stack puts its payload formatter's output in ``uplink_message.decoded_payload``.
When a device is registered with codec ``passthrough`` that object is used
instead of the raw bytes.

Those objects come from someone else's JavaScript, so they are normalised to
what citywatch can store: numbers (and nested objects of numbers, such as
``{"gps_1": {"latitude": ..}}`` or ChirpStack's ``{"temperatureSensor": {"3": ..}}``).

* booleans become 0/1;
* numeric strings (``"3.014"``, common from ``toFixed``) become floats, with a
  warning;
* other strings, nulls, lists, non-finite numbers and objects nested deeper
  than ``max_depth`` are dropped, each with a warning;
* a missing or non-object payload is an error, as is an object with nothing
  numeric left in it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ingest.lorawan.codecs.base import DecodeResult

__all__ = ["PassthroughCodec"]


class PassthroughCodec:
    """Normalise a network-server-decoded object into numeric ``data``.

    Parameters
    ----------
    max_depth : int
        Deepest nesting kept; ``1`` means a flat object.
    """

    name = "passthrough"

    def __init__(self, max_depth: int = 4) -> None:
        self.max_depth = max_depth

    def decode(
        self,
        data: bytes,
        f_port: int,
        variables: Mapping[str, str] | None = None,
    ) -> DecodeResult:
        """Decode ``data`` holding the decoded object as UTF-8 JSON text.

        This keeps the common codec signature (webhook and file replay hand
        over bytes); the LoRaWAN mapping calls :meth:`decode_object` directly.
        """
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:
            return DecodeResult.failure(f"decoded object is not JSON: {exc}")
        return self.decode_object(obj)

    def decode_object(self, obj: Any) -> DecodeResult:
        """Normalise an already-parsed decoded object.

        Parameters
        ----------
        obj : Any
            ``object`` (ChirpStack) or ``decoded_payload`` (The Things Stack);
            ``None`` when the network server had no codec or its codec failed.
        """
        if obj is None:
            return DecodeResult.failure(
                "no decoded object: the network server has no payload codec for this "
                "device, or its codec failed"
            )
        if not isinstance(obj, Mapping):
            return DecodeResult.failure(
                f"decoded object must be a JSON object, got {type(obj).__name__}"
            )
        result = DecodeResult()
        result.data = self._clean(obj, "", 1, result.warnings)
        if not result.data:
            result.errors.append("decoded object holds no numeric values")
        return result

    def _clean(
        self, obj: Mapping[Any, Any], prefix: str, depth: int, warnings: list[str]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in obj.items():
            path = f"{prefix}{key}"
            cleaned = self._value(value, path, depth, warnings)
            if cleaned is not None:
                out[str(key)] = cleaned
        return out

    def _value(self, value: Any, path: str, depth: int, warnings: list[str]) -> Any:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int | float):
            if isinstance(value, float) and not math.isfinite(value):
                warnings.append(f"{path}: non-finite value dropped")
                return None
            return value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                warnings.append(f"{path}: non-numeric string dropped")
                return None
            if not math.isfinite(number):
                warnings.append(f"{path}: non-finite value dropped")
                return None
            warnings.append(f"{path}: numeric string coerced to a number")
            return number
        if isinstance(value, Mapping):
            if depth >= self.max_depth:
                warnings.append(f"{path}: nested deeper than {self.max_depth}; dropped")
                return None
            nested = self._clean(value, f"{path}.", depth + 1, warnings)
            return nested or None
        kind = "null" if value is None else type(value).__name__
        warnings.append(f"{path}: {kind} value dropped")
        return None
