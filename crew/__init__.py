"""The crews' alert service: lifecycle API, routing, notifications and the web inbox."""
