"""The model catalog in the database (the `model_registry` table): versions, cards,
champion and challenger.

Model files stay where :mod:`models.bundle_store` saves them
(``models_path/<version>/``); the database holds each version's model card
(``model_registry``) and an append-only log of who made which version champion
or challenger and when (``model_promotions``). The worker polls
:meth:`ModelCatalog.active` (one indexed query) and loads a version with
:meth:`ModelCatalog.load` when it changes, so a promotion takes effect without
stopping the stream.

Until every worker reads :meth:`ModelCatalog.active`, :meth:`promote` and
:meth:`rollback` also rewrite the file store's ``CHAMPION`` pointer.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from models.bundle import RiskModelBundle, check_version
from models.bundle_store import (
    CARD_FILE,
    BundleError,
    file_checksums,
    load_bundle,
    read_champion,
    smoke_test,
)
from models.bundle_store import promote as write_champion_file
from storage import model_registry as sql

log = logging.getLogger(__name__)

__all__ = ["ActiveBundles", "ActiveModels", "BundleError", "CatalogError", "ModelCatalog"]

# Who reports a load failure: several workers may share one registry.
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


class CatalogError(LookupError):
    """A catalog request that cannot be carried out (unknown version, nothing to roll back)."""


@dataclass(frozen=True)
class ActiveModels:
    """The versions the worker should score with; None when there is none."""

    champion: str | None
    challenger: str | None


class ModelCatalog:
    """Registered model versions and which of them are champion and challenger.

    Parameters
    ----------
    database_url : str
        PostgreSQL URL of the citywatch database (migration v4 applied).
    models_path : Path
        The file model store (``settings.models_path``).

    Every method opens its own short connection, so one instance can be shared
    by threads and used from a long-running worker without holding a session.
    Changes run in one transaction under an advisory lock, so concurrent
    promotions serialise instead of interleaving.
    """

    def __init__(self, database_url: str, models_path: Path) -> None:
        self.database_url = database_url
        self.models_path = Path(models_path)

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.database_url, autocommit=True)

    # -- registration --------------------------------------------------------
    def register(self, version: str, *, owner: str | None = None) -> None:
        """Record a saved bundle's model card in the database (idempotent).

        The bundle is loaded and smoke-tested first, so a version whose files
        do not load or cannot score is never registered; the sha256 of every
        file is stored, and every later load verifies it. Registering a version
        again fills in checksums it lacks (versions from before they existed).
        ``owner`` overrides the card's owner.

        Raises
        ------
        FileNotFoundError
            If ``models_path/<version>`` holds no bundle.
        BundleError
            If the files do not parse or the models cannot score.
        """
        checksums = file_checksums(self.models_path, version)
        bundle = load_bundle(self.models_path, version, checksums=checksums)
        smoke_test(bundle)
        card = dict(bundle.card)
        if owner is not None:
            card["owner"] = owner
        data = card.get("training_data") or {}
        with self._connect() as conn, conn.transaction():
            sql.upsert_model(
                conn,
                version=bundle.version,
                created_at=card.get("created_at"),
                owner=card.get("owner"),
                data_from=data.get("ts_min"),
                data_to=data.get("ts_max"),
                data_sha256=data.get("sha256") or "",
                asset_types=list(bundle.asset_types),
                card=_strict_json(card),
                file_sha256=checksums,
            )

    def _require(self, conn: psycopg.Connection, version: str) -> None:
        check_version(version)
        if sql.fetch_model(conn, version) is None:
            raise CatalogError(
                f"model {version} is not registered (run `citywatch model register {version}`)"
            )

    # -- roles ---------------------------------------------------------------
    def promote(self, version: str, *, actor: str) -> None:
        """Make ``version`` the champion. If it was the challenger, the challenger slot clears.

        Promoting the current champion again changes nothing. When the files
        are in this model store, the bundle is loaded, checked against its
        registered checksums and smoke-tested first; a bundle that fails is
        refused (and the refusal recorded in ``model_load_failures``), so a
        broken champion never reaches the workers from here.

        Raises
        ------
        CatalogError
            If the version is not registered, or its bundle fails to load.
        """
        self._check_before_activating(version, "champion", actor)
        with self._connect() as conn, conn.transaction():
            sql.lock_registry(conn)
            self._require(conn, version)
            active = sql.active_versions(conn)
            if active["champion"] != version:
                sql.record_promotion(
                    conn,
                    role="champion",
                    version=version,
                    previous=active["champion"],
                    action="promote",
                    actor=actor,
                )
            if active["challenger"] == version:
                sql.record_promotion(
                    conn,
                    role="challenger",
                    version=None,
                    previous=version,
                    action="clear_challenger",
                    actor=actor,
                )
            self._write_champion_file(version)

    def set_challenger(self, version: str | None, *, actor: str) -> None:
        """Score ``version`` in shadow beside the champion; None clears the challenger.

        Raises
        ------
        CatalogError
            If the version is not registered, is the champion, or fails to load.
        """
        if version is not None:
            self._check_before_activating(version, "challenger", actor)
        with self._connect() as conn, conn.transaction():
            sql.lock_registry(conn)
            active = sql.active_versions(conn)
            if version is not None:
                self._require(conn, version)
                if version == active["champion"]:
                    raise CatalogError(f"model {version} is the champion; it cannot also shadow")
            if version == active["challenger"]:
                return
            sql.record_promotion(
                conn,
                role="challenger",
                version=version,
                previous=active["challenger"],
                action="set_challenger" if version is not None else "clear_challenger",
                actor=actor,
            )

    def rollback(self, *, actor: str) -> str:
        """Bring back the champion that the current one replaced; return its version.

        Repeated rollbacks walk further back through the promotion history (a
        promotion pushes a version, a rollback pops one).

        Raises
        ------
        CatalogError
            If there is no earlier champion.
        """
        with self._connect() as conn, conn.transaction():
            sql.lock_registry(conn)
            stack: list[str] = []
            for action, version in sql.champion_history(conn):
                if action == "rollback":
                    stack.pop()
                else:
                    stack.append(version)
            if len(stack) < 2:
                raise CatalogError("no earlier champion to roll back to")
            current, target = stack[-1], stack[-2]
            sql.record_promotion(
                conn,
                role="champion",
                version=target,
                previous=current,
                action="rollback",
                actor=actor,
            )
            active = sql.active_versions(conn)
            if active["challenger"] == target:
                sql.record_promotion(
                    conn,
                    role="challenger",
                    version=None,
                    previous=target,
                    action="clear_challenger",
                    actor=actor,
                )
            self._write_champion_file(target)
        return target

    def _check_before_activating(self, version: str, role: str, actor: str) -> None:
        check_version(version)
        if not (self.models_path / version / CARD_FILE).is_file():
            # Registered from another machine's store: the workers' store is checked on load.
            log.warning("model %s has no files in %s; not checked here", version, self.models_path)
            return
        try:
            self.load(version)
        except CatalogError as exc:
            if "not registered" in str(exc):
                raise
            reason = str(exc)
        except Exception as exc:  # any way a bundle fails to load or score
            reason = f"{type(exc).__name__}: {exc}"
        else:
            return
        current = getattr(self.active(), role)
        self.record_load_failure(version, role, "promote", reason, kept=current, worker=actor)
        raise CatalogError(
            f"refused: model {version} cannot be {role}: {reason}. "
            f"The {role} stays {current or 'unset'}."
        )

    def record_load_failure(
        self, version: str, role: str, stage: str, reason: str, *, kept: str | None, worker: str
    ) -> None:
        """Record why ``version`` was refused ('promote') or not loaded ('load')."""
        with self._connect() as conn:
            sql.insert_load_failure(
                conn,
                version=version,
                role=role,
                stage=stage,
                reason=reason,
                kept=kept,
                worker=worker,
            )

    def load_failures(self, version: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The latest recorded load failures, newest first."""
        with self._connect() as conn:
            return sql.fetch_load_failures(conn, version, limit)

    def _write_champion_file(self, version: str) -> None:
        # Keep the file pointer in step for workers that still poll it; a
        # version registered from elsewhere may lack files here, which is fine.
        if (self.models_path / version / CARD_FILE).is_file():
            write_champion_file(self.models_path, version)

    # -- reads ---------------------------------------------------------------
    def active(self) -> ActiveModels:
        """Current champion and challenger (one indexed query; poll it freely)."""
        with self._connect() as conn:
            a = sql.active_versions(conn)
        return ActiveModels(champion=a["champion"], challenger=a["challenger"])

    def load(self, version: str) -> RiskModelBundle:
        """Load a registered version's bundle from the file store.

        Every file is checked against the sha256 recorded at registration
        before it is parsed, and the bundle is smoke-tested (one zero row per
        asset type) before it is returned.

        Raises
        ------
        CatalogError
            If the version is not registered, or its files are not the
            registered ones (training-data hash differs).
        BundleError
            If a file changed since registration, does not parse, or the
            models cannot score.
        FileNotFoundError
            If the files are missing from ``models_path``.
        """
        with self._connect() as conn:
            row = sql.fetch_model(conn, check_version(version))
        if row is None:
            raise CatalogError(f"model {version} is not registered")
        bundle = load_bundle(self.models_path, version, checksums=row.get("file_sha256"))
        on_disk = (bundle.card.get("training_data") or {}).get("sha256") or ""
        if on_disk != row["data_sha256"]:
            raise CatalogError(
                f"model {version} in {self.models_path} is not the registered one "
                f"(training data {on_disk[:12]} != {row['data_sha256'][:12]})"
            )
        smoke_test(bundle)
        return bundle

    def list(self) -> list[dict[str, Any]]:
        """Registered versions, newest first: version, created_at, owner, data range, role."""
        with self._connect() as conn:
            return sql.fetch_models(conn)

    def show(self, version: str) -> dict[str, Any]:
        """One version's row, model card and promotion log.

        Raises
        ------
        CatalogError
            If the version is not registered.
        """
        with self._connect() as conn:
            row = sql.fetch_model(conn, check_version(version))
        if row is None:
            raise CatalogError(f"model {version} is not registered")
        return row


class ActiveBundles:
    """The champion and challenger bundles, reloaded when the registry changes.

    For the worker: call :meth:`current` once per batch. At most every
    ``check_every_s`` it asks :meth:`ModelCatalog.active` (one indexed query)
    and loads any version that changed. While the database is unreachable, or
    a new version fails to load, it keeps scoring with what it has and logs
    why. Until anything is promoted in the registry it falls back to the file
    store's ``CHAMPION`` pointer, so existing installs keep working.

    A version that fails to load (files changed since registration, a file
    that does not parse, a model that cannot score) is recorded once per
    reason in ``model_load_failures`` and tried again every ``retry_failed_s``
    (so restored files are picked up), never on every batch.

    Parameters
    ----------
    registry : ModelCatalog
    check_every_s : float, default=2.0
    retry_failed_s : float, default=30.0
    """

    def __init__(
        self, registry: ModelCatalog, check_every_s: float = 2.0, retry_failed_s: float = 30.0
    ) -> None:
        self.registry = registry
        self.check_every_s = check_every_s
        self.retry_failed_s = retry_failed_s
        self._checked_at = -math.inf
        self.champion: RiskModelBundle | None = None
        self.challenger: RiskModelBundle | None = None
        self._wanted_champion: str | None = None
        # version -> (reason, monotonic time of the next try)
        self._failed: dict[str, tuple[str, float]] = {}

    def _load(self, version: str, from_registry: bool, role: str) -> RiskModelBundle | None:
        failed = self._failed.get(version)
        if failed is not None and time.monotonic() < failed[1]:
            return None
        try:
            if from_registry:
                return self._loaded(version, self.registry.load(version))
            bundle = load_bundle(self.registry.models_path, version)
            smoke_test(bundle)
            return self._loaded(version, bundle)
        except psycopg.Error as exc:  # the registry is unreachable, not the bundle broken
            log.warning("model registry unreachable, cannot load %s yet: %s", version, exc)
            return None
        except Exception as exc:  # any way a bundle fails: keep scoring with what we have
            reason = (
                str(exc)
                if isinstance(exc, CatalogError | BundleError)
                else (f"{type(exc).__name__}: {exc}")
            )
        kept = getattr(self, role)
        log.error(
            "cannot load model %s as %s, keeping %s: %s",
            version,
            role,
            kept.version if kept is not None else "none (waiting)",
            reason,
        )
        if failed is None or failed[0] != reason:
            try:
                self.registry.record_load_failure(
                    version,
                    role,
                    "load",
                    reason,
                    kept=kept.version if kept is not None else None,
                    worker=WORKER_ID,
                )
            except psycopg.Error as exc:
                log.warning("cannot record the load failure of %s: %s", version, exc)
        self._failed[version] = (reason, time.monotonic() + self.retry_failed_s)
        return None

    def _loaded(self, version: str, bundle: RiskModelBundle) -> RiskModelBundle:
        if self._failed.pop(version, None) is not None:
            log.info("model %s loads again", version)
        return bundle

    def refresh(self) -> None:
        """Ask the registry now and load whatever changed."""
        self._checked_at = time.monotonic()
        try:
            active = self.registry.active()
        except psycopg.Error as exc:
            log.warning("model registry unreachable, keeping the current models: %s", exc)
            return
        in_registry = active.champion is not None
        champion = active.champion or read_champion(self.registry.models_path)
        self._wanted_champion = champion
        if champion is not None and (self.champion is None or self.champion.version != champion):
            bundle = self._load(champion, in_registry, "champion")
            if bundle is not None:
                if self.champion is not None:
                    log.info("champion is now %s (was %s)", champion, self.champion.version)
                self.champion = bundle
        if active.challenger is None:
            if self.challenger is not None:
                log.info("challenger %s cleared", self.challenger.version)
            self.challenger = None
        elif self.challenger is None or self.challenger.version != active.challenger:
            bundle = self._load(active.challenger, True, "challenger")
            if bundle is not None:
                log.info("challenger is now %s (shadow scoring)", active.challenger)
            self.challenger = bundle

    def current(self) -> tuple[RiskModelBundle, RiskModelBundle | None]:
        """``(champion, challenger or None)``, refreshed at most every ``check_every_s``.

        Raises
        ------
        RuntimeError
            If there is no champion at all yet, or none that loads: the worker
            waits (as in an outage) instead of stopping.
        """
        if time.monotonic() - self._checked_at >= self.check_every_s:
            self.refresh()
        if self.champion is None:
            failed = self._failed.get(self._wanted_champion or "")
            if failed is not None:
                raise RuntimeError(
                    f"champion {self._wanted_champion} cannot be loaded ({failed[0]}); waiting "
                    "for a loadable champion (restore its files, or `citywatch model rollback`)"
                )
            raise RuntimeError(
                f"no champion model (registry empty, no CHAMPION in {self.registry.models_path}); "
                "run `citywatch train --synthetic` first"
            )
        return self.champion, self.challenger


def _strict_json(obj: Any) -> Any:
    """The card with NaN/inf as None: jsonb rejects them, and metrics may be undefined."""
    if isinstance(obj, dict):
        return {str(k): _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return str(obj)
