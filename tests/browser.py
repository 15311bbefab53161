"""Headless Debian Chromium for browser tests (never a downloaded browser)."""

CHROMIUM = "/usr/bin/chromium"
# Flags that work on a machine with no screen and a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
