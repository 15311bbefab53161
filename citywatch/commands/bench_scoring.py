"""``citywatch bench scoring``: risk-scoring rows/s, one row at a time vs batched vs compiled."""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from core.settings import Settings


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


def _best(run, passes: int = 3) -> tuple[float, np.ndarray]:
    """Fastest of a few passes: the machine is shared, so one pass can be unlucky."""
    return min((run() for _ in range(passes)), key=lambda r: r[0])


def _time_single(score, X: np.ndarray) -> tuple[float, np.ndarray]:
    out = np.empty(len(X))
    t0 = time.perf_counter()
    for i in range(len(X)):
        out[i] = score(X[i : i + 1])[0]
    return time.perf_counter() - t0, out


def _time_batches(score, X: np.ndarray, batch: int) -> tuple[float, np.ndarray]:
    parts = []
    t0 = time.perf_counter()
    for i in range(0, len(X), batch):
        parts.append(score(X[i : i + batch]))
    return time.perf_counter() - t0, np.concatenate(parts)


def scoring_benchmark(
    bundle,
    asset_type: str,
    X: np.ndarray,
    *,
    batch_size: int = 500,
    single_rows: int = 2000,
    compile_cache: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Rows/s of the three ways to score, on the same rows, in the same process.

    Single-row and batched scoring use :meth:`RiskModelBundle.predict_proba`
    exactly as the worker does; compiled scoring is the same call after
    :meth:`RiskModelBundle.compile_native` (lleaves). Each figure is the best
    of three passes, so one pause of the shared machine does not decide it.
    """
    from models.bundle import RiskModelBundle

    one = RiskModelBundle(
        classifiers={asset_type: bundle.classifiers[asset_type]},
        specs={asset_type: bundle.specs[asset_type]},
        version=bundle.version,
        card=bundle.card,
    )
    X_single = X[:single_rows]

    def score(rows: np.ndarray) -> np.ndarray:
        return one.predict_proba(asset_type, rows)

    steps = tqdm(total=4, desc="scoring bench", disable=None if progress else True)
    single_s, single_out = min(
        (_time_single(score, X_single) for _ in range(3)), key=lambda r: r[0]
    )
    steps.update()
    batch_s, batch_out = min(
        (_time_batches(score, X, batch_size) for _ in range(3)), key=lambda r: r[0]
    )
    steps.update()
    result: dict[str, Any] = {
        "model": bundle.version,
        "asset_type": asset_type,
        "features": int(X.shape[1]),
        "trees": int(one.classifiers[asset_type].booster_.num_trees()),
        "rows": len(X),
        "batch_size": batch_size,
        "single_row_rows": len(X_single),
        "single_row_per_s": _rate(len(X_single), single_s),
        "batch_per_s": _rate(len(X), batch_s),
    }
    result["batch_vs_single"] = round(result["batch_per_s"] / result["single_row_per_s"], 2)
    np.testing.assert_allclose(single_out, batch_out[: len(X_single)], rtol=0, atol=1e-12)

    cache = compile_cache or Path(tempfile.mkdtemp(prefix="citywatch-lleaves-"))
    t0 = time.perf_counter()
    try:
        compiled = one.compile_native(cache)
        reason = (
            None if compiled else "lleaves is not installed (pip install lleaves llvmlite<0.44)"
        )
    except Exception as exc:  # an LLVM toolchain problem must not hide the other figures
        compiled, reason = False, f"lleaves failed: {type(exc).__name__}: {exc}"
    result["compile_s"] = round(time.perf_counter() - t0, 2) if compiled else None
    steps.update()
    if compiled:
        c_single_s, _ = _best(lambda: _time_single(score, X_single))
        c_batch_s, c_batch = _best(lambda: _time_batches(score, X, batch_size))
        result.update(
            compiled_single_row_per_s=_rate(len(X_single), c_single_s),
            compiled_batch_per_s=_rate(len(X), c_batch_s),
            compiled_max_abs_diff=float(np.max(np.abs(c_batch - batch_out))),
        )
        result["compiled_batch_vs_batch"] = round(
            result["compiled_batch_per_s"] / result["batch_per_s"], 2
        )
    else:
        result.update(compiled_single_row_per_s=None, compiled_batch_per_s=None)
    result["compiled_reason"] = reason
    steps.update()
    steps.close()
    return result


@click.command("scoring")
@click.option(
    "--asset-type",
    default="water_pump",
    show_default=True,
    envvar="CITYWATCH_BENCH_ASSET_TYPE",
    help="Which asset type's model to score.",
)
@click.option(
    "--rows",
    type=int,
    default=50_000,
    show_default=True,
    envvar="CITYWATCH_BENCH_ROWS",
    help="Feature rows scored in batches.",
)
@click.option(
    "--single-rows",
    type=int,
    default=2_000,
    show_default=True,
    envvar="CITYWATCH_BENCH_SINGLE_ROWS",
    help="Rows scored one at a time (slow, so fewer).",
)
@click.option(
    "--batch-size",
    type=int,
    default=500,
    show_default=True,
    envvar="CITYWATCH_BATCH_SIZE",
    help="Rows per batch (the worker's take() batch size).",
)
@click.option(
    "--version",
    "version",
    envvar="CITYWATCH_BENCH_MODEL",
    help="Model version from the store [default: the champion; else a fresh synthetic one].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_obj
def bench_scoring(
    settings: Settings, asset_type, rows, single_rows, batch_size, version, as_json
) -> None:
    """Risk-scoring throughput: single-row, batched and lleaves-compiled, same rows, same run.

    Feature rows come from simulator history through the production feature
    code. Compiled: null with a reason when lleaves is unavailable. The
    compiled models are cached under <model store>/.native/.
    """
    from ingest.history_tables import history_frame
    from ingest.simulator import FleetSimulator
    from models.bundle_store import load_bundle, read_champion
    from models.features import compute_features

    version = version or read_champion(settings.models_path)
    if version is None:
        from services.training import train_synthetic

        bundle, _, _ = train_synthetic(settings, progress=not as_json, promote=False)
    else:
        bundle = load_bundle(settings.models_path, version)
    if asset_type not in bundle.asset_types:
        raise click.ClickException(f"model {bundle.version} has no {asset_type} model")
    fleet = FleetSimulator(n_devices=40, seed=99)
    ticks = max(rows // 10 + 200, 300)  # ~a quarter of the fleet is this asset type
    readings, _ = fleet.history(ticks, datetime(2026, 6, 1, tzinfo=UTC), timedelta(minutes=1))
    history = history_frame(readings)
    history = history[history["asset_type"] == asset_type]
    X = compute_features(history, bundle.feature_spec(asset_type), order_col="tick").to_numpy()
    if len(X) < rows:
        X = np.concatenate([X] * (rows // len(X) + 1))
    X = np.ascontiguousarray(X[:rows])
    result = scoring_benchmark(
        bundle,
        asset_type,
        X,
        batch_size=batch_size,
        single_rows=single_rows,
        compile_cache=settings.models_path / ".native",
        progress=not as_json,
    )
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"model {result['model']} ({asset_type}, {result['trees']} trees)")
    click.echo(f"single row      {result['single_row_per_s']:>12,.0f} rows/s")
    click.echo(f"batch of {batch_size:<6d} {result['batch_per_s']:>12,.0f} rows/s")
    if result["compiled_batch_per_s"] is None:
        click.echo(f"compiled        n/a ({result['compiled_reason']})")
    else:
        click.echo(f"compiled single {result['compiled_single_row_per_s']:>12,.0f} rows/s")
        click.echo(f"compiled batch  {result['compiled_batch_per_s']:>12,.0f} rows/s")
