"""The alerts tables, by job: each module is one kind of caller's SQL.

- ``opening``: a new alert's zone, team (routing rules) and row;
- ``worker``: the worker's alert rows, applied inside its sink's transaction;
- ``grafana``: alerts raised by Grafana rules;
- ``actions``: what people do (acknowledge, assign, resolve, comment);
- ``access``: who acts, and which alerts they may see;
- ``inbox``: the inbox's reads;
- ``outbox``: transitions, escalation and notification deliveries;
- ``admin``: teams, users, tokens, routing rules and channels.

Every state change is one transaction that updates ``alerts``, appends a row to
``alert_transitions`` (who, when, from, to) and calls ``pg_notify`` so the
notifier wakes at commit. The transitions table is the outbox: notifications
are derived from it, never sent from inside the transaction. Which action is
allowed from which status is the crew service's rule (``crew.lifecycle``).
"""
