"""Features and failure-risk models.

``features`` computes per-device features one reading at a time (the worker)
or over a whole history (training), with identical results. ``risk`` holds the
scikit-learn-style estimators, ``registry`` the file-based model store and
``training`` builds a :class:`RiskModelBundle` from history and failures,
``catalog`` is the database registry (cards, champion, challenger) and ``drift``
the feature-drift monitor.
"""

from models.catalog import ActiveBundles, ActiveModels, ModelRegistry, RegistryError
from models.feature_spec import FeatureSpec
from models.features import DeviceFeatureState, compute_features
from models.registry import (
    RiskModelBundle,
    list_versions,
    load_bundle,
    load_champion,
    promote,
    read_champion,
    save_bundle,
)
from models.risk import FailureRiskClassifier, RemainingLifeRegressor
from models.training import train_risk_bundle

__all__ = [
    "ActiveBundles",
    "ActiveModels",
    "DeviceFeatureState",
    "FailureRiskClassifier",
    "FeatureSpec",
    "ModelRegistry",
    "RegistryError",
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
