#!/bin/sh
# Entrypoint of compose's Mosquitto: build the password file from secrets, then start.
# Nothing is shipped or defaulted: a missing or short password stops the container.
# Paths come from the environment so tests run this same script outside a container.
set -eu
auth_dir="${MOSQUITTO_AUTH_DIR:-/mosquitto/auth}"
config="${MOSQUITTO_CONFIG:-/mosquitto/config/mosquitto.conf}"
acl="${MOSQUITTO_ACL:-/mosquitto/config/acl.conf}"

require() {  # name value: refuse empty and short secrets, never print them
    if [ "${#2}" -lt 12 ]; then
        echo "mosquitto: $1 is missing or shorter than 12 characters (see .env.example)" >&2
        exit 1
    fi
}
require CITYWATCH_MQTT_BRIDGE_PASSWORD "${CITYWATCH_MQTT_BRIDGE_PASSWORD:-}"
require CITYWATCH_MQTT_NETWORK_SERVER_PASSWORD "${CITYWATCH_MQTT_NETWORK_SERVER_PASSWORD:-}"

umask 077
mkdir -p "$auth_dir"
# The healthcheck's password is random per start and only root in the container reads it.
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$auth_dir/healthcheck"
# user:password lines, hashed in place by mosquitto_passwd -U (no password on a command
# line, where `ps` would show it).
{
    printf 'citywatch-bridge:%s\n' "$CITYWATCH_MQTT_BRIDGE_PASSWORD"
    printf 'network-server:%s\n' "$CITYWATCH_MQTT_NETWORK_SERVER_PASSWORD"
    printf 'healthcheck:%s\n' "$(cat "$auth_dir/healthcheck")"
} > "$auth_dir/passwd"
mosquitto_passwd -U "$auth_dir/passwd"
# A private copy of the ACL: Mosquitto 2.0.18+ warns about (and later versions refuse)
# world-readable ACL and password files, and the mounted one is the host's.
cp "$acl" "$auth_dir/acl.conf"
if id mosquitto >/dev/null 2>&1; then
    # Mosquitto drops to this user before it reads them.
    chown mosquitto "$auth_dir" "$auth_dir/passwd" "$auth_dir/acl.conf"
    # What the image's own entrypoint (replaced by this one) does for persistence.
    if [ -d /mosquitto/data ]; then
        chown -R mosquitto:mosquitto /mosquitto/data
    fi
fi
exec mosquitto -c "$config"
