"""How citywatch reaches an MQTT broker: URL, credentials, TLS, and logs that hide secrets.

``mqtt://`` (port 1883) is plain TCP; ``mqtts://`` (port 8883) is TLS, checked
against the system's CAs or a given CA file. Credentials come from the URL's
``user:password@`` or, better (no secret in a URL that ends up in a process
list or a log), from ``CITYWATCH_MQTT_USERNAME`` / ``CITYWATCH_MQTT_PASSWORD``.
Only :meth:`MqttTarget.redacted` is ever logged.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from pydantic import SecretStr

__all__ = ["MqttTarget", "parse_mqtt_url"]

_PLAIN = ("mqtt", "tcp")
_TLS = ("mqtts", "ssl")


@dataclass(frozen=True)
class MqttTarget:
    """One MQTT broker and how to log in to it."""

    host: str
    port: int
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def redacted(self) -> str:
        """The URL without its password: the only form that goes to logs."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"

    def with_credentials(
        self,
        username: str | None = None,
        password: SecretStr | None = None,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> MqttTarget:
        """This target with settings from flags or the environment filled in."""
        return MqttTarget(
            self.host,
            self.port,
            username or self.username,
            password or self.password,
            self.tls or ca_file is not None,
            ca_file or self.ca_file,
            cert_file or self.cert_file,
            key_file or self.key_file,
        )

    def configure(self, client: mqtt.Client) -> None:
        """Set credentials and TLS on a paho client before it connects."""
        if self.username is not None:
            password = self.password.get_secret_value() if self.password else None
            client.username_pw_set(self.username, password)
        if self.tls:
            # Certificates are always verified; there is no switch to turn that off.
            client.tls_set(
                ca_certs=str(self.ca_file) if self.ca_file else None,
                certfile=str(self.cert_file) if self.cert_file else None,
                keyfile=str(self.key_file) if self.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt[s]://[user[:password]@]host[:port]`` -> :class:`MqttTarget`."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in _PLAIN + _TLS or not parts.hostname:
        # Not the URL itself: it may hold a password.
        raise ValueError(
            f"expected mqtt://host:port or mqtts://host:port, got scheme {parts.scheme!r}"
            f" and host {parts.hostname!r}"
        )
    tls = parts.scheme in _TLS
    return MqttTarget(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        username=parts.username,
        password=SecretStr(parts.password) if parts.password is not None else None,
        tls=tls,
    )
