"""The models a running worker scores with, swapped in without a restart.

The champion scores every reading and drives alerts; an optional challenger
scores the same feature rows in shadow (stored with ``role='challenger'``,
never alerting). Which versions are active comes from the model registry and
is re-read every few seconds, so a promotion reaches every worker within
``check_every_s`` plus one batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from models.catalog import ModelRegistry
from models.registry import RiskModelBundle, load_bundle, read_champion
from storage.sinks import SinkUnavailableError

log = logging.getLogger("citywatch.worker")

ActiveVersions = Callable[[], tuple[str | None, str | None]]
LoadVersion = Callable[[str], RiskModelBundle]


def file_registry(models_path: Path) -> tuple[ActiveVersions, LoadVersion]:
    """Active versions from the model store's CHAMPION (and CHALLENGER) pointer files."""

    def active() -> tuple[str | None, str | None]:
        challenger_file = models_path / "CHALLENGER"
        challenger = challenger_file.read_text().strip() if challenger_file.exists() else None
        return read_champion(models_path), challenger or None

    return active, lambda version: load_bundle(models_path, version)


def database_registry(database_url: str, models_path: Path) -> tuple[ActiveVersions, LoadVersion]:
    """Active versions from the database registry (``citywatch model promote``).

    Until anything is registered there, the file store's pointers stand in, so
    a fresh install with a model trained before the registry existed still runs.
    """
    registry = ModelRegistry(database_url, models_path)
    file_active, file_load = file_registry(models_path)
    registered = False

    def active() -> tuple[str | None, str | None]:
        nonlocal registered
        current = registry.active()
        registered = current.champion is not None
        if not registered:
            return file_active()
        return current.champion, current.challenger

    def load(version: str) -> RiskModelBundle:
        return registry.load(version) if registered else file_load(version)

    return active, load


class ModelsUnavailableError(SinkUnavailableError):
    """No model to score with yet; the worker holds the batch and asks again."""


class LiveModels:
    """Champion and challenger bundles, refreshed from the registry on a timer.

    Parameters
    ----------
    active : callable
        Returns ``(champion_version, challenger_version)``; either may be None.
    load : callable
        Loads a bundle by version.
    check_every_s : float
        How often to ask ``active``; asking is cheap, loading happens only
        when a version changes.
    """

    def __init__(self, active: ActiveVersions, load: LoadVersion, check_every_s: float = 2.0):
        self._active = active
        self._load = load
        self._check_every = check_every_s
        self._checked_at = float("-inf")
        self._bundles: dict[str, RiskModelBundle] = {}
        self._champion: str | None = None
        self._challenger: str | None = None

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self._check_every:
            return
        try:
            champion, challenger = self._active()
            for version in (champion, challenger):
                if version is not None and version not in self._bundles:
                    self._bundles[version] = self._load(version)
        except psycopg.OperationalError as exc:
            if self._champion is None:
                # Nothing to score with yet: the batch waits, like any database outage.
                raise ModelsUnavailableError(f"model registry unavailable: {exc}") from exc
            # A registry outage must not stop scoring: keep the models we have.
            log.warning("cannot refresh models (%s); keeping %s", exc, self._champion)
            self._checked_at = now
            return
        self._checked_at = now
        if champion != self._champion and champion is not None:
            if self._champion is not None:
                log.info("model %s promoted to champion; scoring with it now", champion)
            self._champion = champion
        if challenger != self._challenger:
            if challenger is not None:
                log.info("model %s scores in shadow as challenger", challenger)
            self._challenger = challenger
        # Keep only what is in use, so a long-running worker doesn't hoard models.
        self._bundles = {
            v: b for v, b in self._bundles.items() if v in (self._champion, self._challenger)
        }

    @property
    def champion(self) -> RiskModelBundle:
        self.refresh()
        if self._champion is None:
            self._checked_at = float("-inf")  # ask again on the next batch
            raise ModelsUnavailableError(
                "no champion model yet; waiting for `citywatch train` or `citywatch model promote`"
            )
        return self._bundles[self._champion]

    @property
    def challenger(self) -> RiskModelBundle | None:
        self.refresh()
        if self._challenger is None or self._challenger == self._champion:
            return None
        return self._bundles.get(self._challenger)
