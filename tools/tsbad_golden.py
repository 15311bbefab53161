"""Print TSB-AD's own VUS-PR on the small vectors that tests/models/test_vus.py checks.

TSB-AD cannot be installed next to citywatch (it pins numpy<2 and needs torch),
so its evaluation module is loaded from an unpacked wheel:

    pip download TSB-AD==1.5 --no-deps -d /tmp/tsbad
    cd /tmp/tsbad && unzip -o TSB_AD-1.5-py3-none-any.whl
    python tools/tsbad_golden.py /tmp/tsbad
"""

import importlib.util
import sys

import numpy as np


def vectors():
    """The (labels, score, window) cases; the test rebuilds them with the same seeds."""
    cases = []
    for seed, n, window in ((0, 60, 4), (1, 200, 10), (2, 300, 25), (3, 150, 0), (4, 500, 7)):
        rng = np.random.default_rng(seed)
        y = np.zeros(n, dtype=int)
        for start in rng.choice(n - 10, size=3, replace=False):
            y[start : start + rng.integers(1, 8)] = 1
        score = rng.normal(size=n) + 1.5 * y + 0.5 * np.roll(y, 2)
        if seed == 4:
            score = np.round(score, 1)  # ties
        cases.append((y, score, window))
    # Events touching both ends of the series.
    rng = np.random.default_rng(5)
    y = np.zeros(80, dtype=int)
    y[:3] = 1
    y[40:45] = 1
    y[-2:] = 1
    cases.append((y, rng.normal(size=80) + y, 12))
    return cases


def main(root: str) -> None:
    spec = importlib.util.spec_from_file_location(
        "tsbad_basic", f"{root}/TSB_AD/evaluation/basic_metrics.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for y, score, window in vectors():
        *_, _vus_roc, vus_pr = mod.generate_curve(y, score, window, "opt", 250)
        print(repr(float(vus_pr)))


if __name__ == "__main__":
    main(sys.argv[1])
