"""The normalised uplink: what every network-server format is parsed into."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

__all__ = ["MAX_MESSAGE_BYTES", "GatewayRx", "Network", "TimeSource", "TopicInfo", "Uplink"]

Network = Literal["chirpstack", "tts"]
TimeSource = Literal["network", "gateway", "ingest"]

#: Larger messages are refused before parsing (``too_large``). A LoRaWAN payload
#: is at most 242 bytes and a real uplink JSON a few KB (about 0.4 KB per
#: gateway in ``rxInfo``), so 64 KiB leaves room for ~150 gateways.
MAX_MESSAGE_BYTES = 64 << 10


@dataclass(frozen=True)
class GatewayRx:
    """One gateway's reception of a frame.

    Parameters
    ----------
    gateway_id : str
        Gateway id as the network server names it. For The Things Stack
        frames relayed by Packet Broker it is ``packetbroker/<forwarder id>``
        so different forwarding gateways stay distinct.
    rssi : float or None
        Received signal strength in dBm; None when not reported.
    snr : float or None
        LoRa signal-to-noise ratio in dB; None when not reported (non-LoRa).
    time : datetime or None
        Gateway (or network-server) reception time, timezone-aware.
    """

    gateway_id: str
    rssi: float | None = None
    snr: float | None = None
    time: datetime | None = None


@dataclass(frozen=True)
class Uplink:
    """A network-server uplink, normalised across ChirpStack and The Things Stack.

    Parameters
    ----------
    network : {"chirpstack", "tts"}
        Which network server produced it.
    dev_eui : str or None
        Device EUI, 16 lower-case hex digits; None when the network server
        identifies the device only by its id (The Things Stack allows that).
    f_cnt, f_port : int
        Uplink frame counter and frame port.
    payload : bytes
        Decrypted FRMPayload (empty when the frame carried none).
    received_at : datetime
        Reception time, timezone-aware UTC; ``time_source`` says where it came from.
    rx : tuple of GatewayRx
        Every gateway that heard the frame.
    decoded : mapping or None
        The object the network server's own codec produced, if any.
    spreading_factor, bandwidth, frequency, data_rate : int or None
        Radio settings: LoRa SF, bandwidth (Hz), frequency (Hz), DR index.
    application_id, device_name : str or None
        Network-server identifiers (``device_name`` is TTS's ``device_id``).
    dev_addr, session_id : str or None
        Session identity: the DevAddr, and TTS's ``session_key_id``. Both
        change on a rejoin, which tells a counter reset from a duplicate.
    confirmed, simulated : bool
        Confirmed uplink; injected by the TTS console/simulator.
    copies : int
        Network-server events merged into this one by the deduplicator.
    time_source : {"network", "gateway", "ingest"}
        The message's own reception time, the earliest gateway time, or the
        moment citywatch received it (when the message has no valid time).
    tenant : str or None
        The Things Stack tenant, from the MQTT topic (``{app}@{tenant}``).
    """

    network: Network
    dev_eui: str | None
    f_cnt: int
    f_port: int
    payload: bytes
    received_at: datetime
    rx: tuple[GatewayRx, ...] = ()
    decoded: Mapping[str, Any] | None = None
    spreading_factor: int | None = None
    bandwidth: int | None = None
    frequency: int | None = None
    data_rate: int | None = None
    application_id: str | None = None
    device_name: str | None = None
    dev_addr: str | None = None
    session_id: str | None = None
    confirmed: bool = False
    simulated: bool = False
    copies: int = 1
    time_source: TimeSource = "network"
    tenant: str | None = None

    @property
    def device(self) -> str:
        """The device's identity: its DevEUI, else the network server's device id."""
        return self.dev_eui or self.device_name or ""

    @property
    def gateway_ids(self) -> tuple[str, ...]:
        """Distinct gateway ids, in reception order."""
        return tuple(dict.fromkeys(rx.gateway_id for rx in self.rx))

    @property
    def gateway_count(self) -> int:
        """Number of distinct gateways that heard the frame."""
        return len(self.gateway_ids)

    @property
    def best_rssi(self) -> float | None:
        """Highest RSSI over all gateways (dBm), or None."""
        values = [rx.rssi for rx in self.rx if rx.rssi is not None]
        return max(values) if values else None

    @property
    def best_snr(self) -> float | None:
        """Highest SNR over all gateways (dB), or None.

        It may come from a different gateway than :attr:`best_rssi`.
        """
        values = [rx.snr for rx in self.rx if rx.snr is not None]
        return max(values) if values else None


@dataclass(frozen=True)
class TopicInfo:
    """What an MQTT topic says about the message it carries."""

    network: Network
    application_id: str
    device: str  # DevEUI for ChirpStack, device_id for The Things Stack
    event: str
    tenant: str | None = None
