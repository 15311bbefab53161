"""Train the failure-risk models, save them in the bundle store, register and promote them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import Settings

if TYPE_CHECKING:
    from models.bundle import RiskModelBundle


def publish_bundle(
    settings: Settings,
    bundle: RiskModelBundle,
    *,
    database_url: str | None,
    promote: bool,
    owner: str | None,
    actor: str,
) -> Path:
    """Save the bundle, register it in the database (if given) and maybe promote it."""
    from models.bundle_store import promote as promote_file
    from models.bundle_store import save_bundle

    path = save_bundle(bundle, settings.models_path)
    if database_url is not None:
        from models.catalog import ModelCatalog

        registry = ModelCatalog(database_url, settings.models_path)
        registry.register(bundle.version, owner=owner)
        if promote:
            registry.promote(bundle.version, actor=actor)  # also writes CHAMPION
    elif promote:
        promote_file(settings.models_path, bundle.version)
    return path


def train_synthetic(
    settings: Settings,
    *,
    devices: int = 120,
    ticks: int = 2000,
    seed: int = 0,
    horizon: int = 60,
    progress: bool = True,
    promote: bool = True,
    database_url: str | None = None,
    owner: str | None = None,
    actor: str = "citywatch train",
    classifier_params: dict[str, Any] | None = None,
) -> tuple[RiskModelBundle, dict[str, Any], Path]:
    """Simulate a fleet's history, train one classifier per asset type, save it.

    With ``database_url`` the version is also registered in the database
    registry (and promoted there when ``promote``); without it only the file
    store's ``CHAMPION`` pointer moves.
    """
    from ingest.history_tables import failures_frame, history_frame
    from ingest.simulator import FleetSimulator
    from models.training import train_risk_bundle

    fleet = FleetSimulator(n_devices=devices, seed=seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    readings, failures = fleet.history(ticks, start, timedelta(minutes=1))
    bundle, metrics = train_risk_bundle(
        history_frame(readings),
        failures_frame(failures),
        horizon=horizon,
        seed=seed,
        progress=progress,
        # Resets at each device's first reading after a failure: where the
        # simulator sends its maintenance event and the worker resets too.
        reset_on_failure=True,
        classifier_params=classifier_params,
        data_notes={"source": f"simulator: {devices} devices x {ticks} readings, seed {seed}"},
        **({"owner": owner} if owner else {}),
    )
    path = publish_bundle(
        settings, bundle, database_url=database_url, promote=promote, owner=owner, actor=actor
    )
    return bundle, metrics, path


def train_from_database(
    settings: Settings,
    database_url: str,
    *,
    horizon: int = 60,
    seed: int = 0,
    since: datetime | None = None,
    until: datetime | None = None,
    asset_types: list[str] | None = None,
    test_fraction: float = 0.25,
    test_time_fraction: float = 0.25,
    classifier_params: dict[str, Any] | None = None,
    progress: bool = True,
    promote: bool = False,
    owner: str | None = None,
    actor: str = "citywatch train",
    created_at: datetime | None = None,
    include_simulated: bool = False,
) -> tuple[RiskModelBundle, dict[str, Any], Path]:
    """Train on the readings and labels stored in the database; save and register the model.

    Raises
    ------
    ValueError
        If the database holds no readings in the range, or no asset type has
        both failures and enough assets.
    """
    from models.history import load_training_data
    from models.training import train_risk_bundle

    data = load_training_data(
        database_url,
        horizon=horizon,
        since=since,
        until=until,
        asset_types=asset_types,
        include_simulated=include_simulated,
    )
    if data.history.empty:
        raise ValueError("no readings in the database for that range; nothing to train on")
    bundle, metrics = train_risk_bundle(
        data.history,
        data.failures,
        horizon=horizon,
        seed=seed,
        progress=progress,
        test_fraction=test_fraction,
        test_time_fraction=test_time_fraction,
        # Resets where the worker did: at the stored maintenance events.
        reset_on_failure=True,
        resets=data.resets,
        classifier_params=classifier_params,
        data_notes=data.notes,
        created_at=created_at,
        **({"owner": owner} if owner else {}),
    )
    path = publish_bundle(
        settings, bundle, database_url=database_url, promote=promote, owner=owner, actor=actor
    )
    return bundle, metrics, path
