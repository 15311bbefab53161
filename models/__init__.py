"""Features and failure-risk models.

``feature_spec`` says which features a device gets and ``features`` computes
them one reading at a time (the worker) or over a whole history (training),
with identical results. ``risk`` holds the scikit-learn-style estimators and
``calibration`` their held-out calibration and threshold; ``bundle`` is one
model version in memory, ``bundle_store`` the file-based store of versions,
``catalog`` the database's catalogue of them (cards, champion, challenger);
``training`` builds a bundle from history and failures and ``drift`` is the
feature-drift monitor.
"""

from models.bundle import RiskModelBundle
from models.bundle_store import (
    list_versions,
    load_bundle,
    load_champion,
    promote,
    read_champion,
    save_bundle,
)
from models.catalog import ActiveBundles, ActiveModels, CatalogError, ModelCatalog
from models.feature_spec import FeatureSpec
from models.features import DeviceFeatureState, compute_features
from models.risk import FailureRiskClassifier, RemainingLifeRegressor
from models.training import train_risk_bundle

__all__ = [
    "ActiveBundles",
    "ActiveModels",
    "CatalogError",
    "DeviceFeatureState",
    "FailureRiskClassifier",
    "FeatureSpec",
    "ModelCatalog",
    "RemainingLifeRegressor",
    "RiskModelBundle",
    "compute_features",
    "list_versions",
    "load_bundle",
    "load_champion",
    "promote",
    "read_champion",
    "save_bundle",
    "train_risk_bundle",
]
