"""The payload-codec contract every LoRaWAN decoder in citywatch follows.

It mirrors ChirpStack's ``decodeUplink`` contract: bytes, fPort and device
variables in; ``data``, ``warnings`` and ``errors`` out. A codec never raises
on a bad payload: failure is data, reported as a non-empty ``errors`` list, so
the caller can dead-letter the frame with a reason instead of crashing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["Codec", "DecodeResult", "DecodedValue"]

#: A decoded value: a number, or a small object of numbers for multi-axis
#: channels (``{"x": .., "y": .., "z": ..}``, ``{"latitude": .., ...}``).
DecodedValue = int | float | Mapping[str, Any]


@dataclass
class DecodeResult:
    """The outcome of one ``decode`` call.

    Parameters
    ----------
    data : dict
        Decoded values by key. May be partly filled when ``errors`` is
        non-empty (what was decoded before the failure), which helps when
        reading a dead letter; callers must not publish it.
    warnings : list of str
        Problems that did not stop decoding (ignored trailing bytes, sentinel
        "no reading" values, coerced strings).
    errors : list of str
        Problems that make the frame unusable. Non-empty means failure.
    """

    data: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when decoding succeeded (no errors)."""
        return not self.errors

    @classmethod
    def failure(cls, message: str, *, data: dict[str, Any] | None = None) -> DecodeResult:
        """Build a failed result with one error message."""
        return cls(data=dict(data or {}), errors=[message])


@runtime_checkable
class Codec(Protocol):
    """A payload decoder for one device family.

    Implementations are pure: no I/O, no clocks, no global state, so the same
    bytes always decode to the same result and golden vectors stay valid.
    """

    #: Registry name, e.g. ``"cayenne_lpp"`` or ``"profile:water_pump"``.
    name: str

    def decode(
        self,
        data: bytes,
        f_port: int,
        variables: Mapping[str, str] | None = None,
    ) -> DecodeResult:
        """Decode one uplink FRMPayload.

        Parameters
        ----------
        data : bytes
            The decrypted application payload (FRMPayload).
        f_port : int
            The LoRaWAN frame port (1-223 for application data).
        variables : mapping of str to str, optional
            Per-device configuration, as ChirpStack passes device variables.
            The built-in codecs accept and ignore it.

        Returns
        -------
        DecodeResult
            Never raises for bad input; problems are in ``errors``.
        """
        ...
