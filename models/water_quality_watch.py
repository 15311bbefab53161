"""Reloading a water-quality model file in a running worker, safely.

The worker (``streams.water_quality.WaterQualityHook``) asks :class:`ModelWatch`
between batches whether the file named by ``CITYWATCH_WATER_QUALITY_MODEL`` has
been replaced. A look is one ``stat`` at most every ``water_quality_reload_s``
seconds; only a changed file (device, inode, size or mtime) is read. The file
is untrusted: one that does not load, or that the worker could not score with
(:func:`serving_problem`), is refused with one warning per file version, and
the model already running keeps scoring.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.water_quality import HORIZONS_H, StationState
from models.water_quality_model import (
    StationScorer,
    WaterQualityModel,
    parse_water_quality_model,
)

__all__ = ["MAX_MODEL_BYTES", "ModelWatch", "serving_problem"]

log = logging.getLogger("citywatch.worker")


def serving_problem(model: WaterQualityModel) -> str | None:
    """Why the worker cannot score with ``model`` (None: it can).

    The loader checks the file's format; this checks what would otherwise fail
    in the middle of a batch, where a failure is retried for ever: the model must
    read exactly the stream's features (:class:`StationState` computes them, the
    model only reads them), know only the worker's horizons, have finite
    thresholds, and predict a finite probability for a row.
    """
    if tuple(model.feature_names) != StationState().feature_names:
        return "its features are not this worker's stream features (another feature version)"
    unknown = set(model.horizon_models) - set(HORIZONS_H)
    if unknown:
        return f"horizons {sorted(unknown)} h are not among {list(HORIZONS_H)}"
    thresholds = [model.alarm_threshold, *model.horizon_thresholds.values()]
    if not all(math.isfinite(t) for t in thresholds):
        return "a threshold is not a finite number"
    row = np.zeros((1, len(model.feature_names)))
    try:
        probs = [model.event_probability(row)]
        probs += [model.horizon_probability(row, h) for h in model.horizon_models]
    except Exception as exc:  # any failure here is the file's fault
        return f"it cannot score a row ({type(exc).__name__}: {exc})"
    if not all(p.shape == (1,) and np.isfinite(p).all() for p in probs):
        return "it scores a row to something other than one finite probability"
    return None


#: A model file larger than this is refused on reload without reading it (the
#: GECCO model with four horizons is about 1 MB).
MAX_MODEL_BYTES = 256 * 1024 * 1024


#: Seconds the child process may take to check a model file (about 2 s: Python,
#: LightGBM and the parse).
CHILD_TIMEOUT_S = 120.0


def _stamp(path: Path) -> tuple[int, int, int, int] | None:
    """What tells a replaced file apart: device, inode, size, mtime (None: no file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class _Check:
    """A new file's bytes being checked by a child process."""

    def __init__(self, stamp: tuple[int, int, int, int], raw: bytes, clock: float) -> None:
        self.stamp, self.raw, self.started = stamp, raw, clock
        # The bytes go to the child through a private file: a pipe would block
        # this thread once its buffer is full.
        fd, self.snapshot = tempfile.mkstemp(prefix="citywatch-wq-check-", suffix=".json")
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        # Its output to a file too: a chatty parser must not fill a pipe and stall.
        self.out = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "models.water_quality_watch", self.snapshot],
            stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.DEVNULL,
            env=_child_env(),
        )  # fmt: skip

    def verdict(self, now: float, timeout_s: float) -> tuple[bool, str | None]:
        """``(done, problem)``: not done yet, or done with None (fine) or the reason."""
        if self.proc.poll() is None:
            if now - self.started < timeout_s:
                return False, None
            self.proc.kill()
            self.proc.wait()
            self.close()
            return True, f"checking it took more than {timeout_s:.0f} s"
        self.out.seek(0)
        out = self.out.read(1 << 20)
        self.close()
        return True, _problem(self.proc.returncode, out)

    def close(self) -> None:
        self.out.close()
        with contextlib.suppress(OSError):
            os.unlink(self.snapshot)


class ModelWatch:
    """Notices a new water-quality model file and loads it, without stopping anything.

    Parameters
    ----------
    path : Path or None
        The model file (``CITYWATCH_WATER_QUALITY_MODEL``); None: never reloads.
    every_s : float
        Seconds between two looks at the file (a ``stat``, no read).
    clock : callable
        Monotonic seconds; tests pass their own.

    Call :meth:`started` right before the start-up load, then :meth:`check`
    between batches. A changed file is read once and checked by a child process
    (LightGBM's parser can abort a process on damaged input), which runs while
    the worker goes on scoring with the old model; a later :meth:`check` takes
    the verdict and, if good, parses the same bytes in-process. The file must
    be replaced atomically (written elsewhere, then ``os.replace``), as
    ``save_water_quality_model`` does: a file written in place can be caught
    half-written, which costs a warning and a second look once the writer is
    done (its stamp changes again).
    """

    def __init__(
        self, path: Path | None, every_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path, self.every_s, self._clock = path, every_s, clock
        self._stamp: tuple[int, int, int, int] | None = None
        self._refused: tuple[int, int, int, int] | None = None
        self._check: _Check | None = None
        self._due = 0.0

    def started(self) -> None:
        """Remember the file as it is now. Taken before the start-up load: a file
        replaced meanwhile is loaded once more, never missed."""
        if self.path is not None:
            self._stamp = _stamp(self.path)
        self._due = self._clock() + self.every_s

    @property
    def checking(self) -> bool:
        """A new file is being checked in a child process."""
        return self._check is not None

    def check(self, current: StationScorer) -> StationScorer | None:
        """A scorer with the file's new model, or None (unchanged, not due, being
        checked, or refused). Never waits for the child process."""
        if self.path is None:
            return None
        if self._check is not None:
            return self._finish(current)
        if self._clock() < self._due:
            return None
        self._due = self._clock() + self.every_s
        stamp = _stamp(self.path)
        if stamp == self._stamp or stamp == self._refused:
            return None
        if stamp is None:
            self._stamp = self._refused = None
            log.warning(
                "water quality: model file %s is gone; model %s keeps scoring",
                self.path, current.version,
            )  # fmt: skip
            return None
        raw, problem = self._read(stamp)
        if raw is None:
            self._refuse(stamp, problem, current)
            return None
        self._check = _Check(stamp, raw, self._clock())
        log.info("water quality: %s changed; checking it", self.path)
        return None

    def wait(self, timeout_s: float = CHILD_TIMEOUT_S) -> None:
        """Block until the child's check is over (tests, and the bench)."""
        if self._check is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._check.proc.wait(timeout_s)

    def _finish(self, current: StationScorer) -> StationScorer | None:
        check = self._check
        assert check is not None
        done, problem = check.verdict(self._clock(), CHILD_TIMEOUT_S)
        if not done:
            return None
        self._check = None
        model = None
        if problem is None:
            try:
                model = parse_water_quality_model(check.raw, str(self.path))
            except Exception as exc:  # an untrusted file must not stop the worker
                problem = f"{type(exc).__name__}: {exc}"
            else:
                problem = serving_problem(model)
        if model is None or problem is not None:
            self._refuse(check.stamp, problem or "", current)
            return None
        self._stamp, self._refused = check.stamp, None
        if model.version == current.version:
            log.info("water quality: %s rewritten, model %s unchanged", self.path, model.version)
            return None
        log.info(
            "water quality: model %s from %s replaces %s",
            model.version, self.path, current.version,
        )  # fmt: skip
        scorer = StationScorer(model)
        scorer.states = current.states  # the feature states do not depend on the model
        return scorer

    def _refuse(self, stamp: tuple[int, int, int, int], problem: str, current) -> None:
        self._refused = stamp  # warned once per file version
        log.warning(
            "water quality: new model file %s refused (%s); model %s keeps scoring",
            self.path, problem, current.version,
        )  # fmt: skip

    def _read(self, stamp: tuple[int, int, int, int]) -> tuple[bytes | None, str]:
        if stamp[2] > MAX_MODEL_BYTES:
            return None, f"{stamp[2]} bytes, more than {MAX_MODEL_BYTES}"
        try:
            with open(self.path, "rb") as f:  # type: ignore[arg-type]
                raw = f.read(MAX_MODEL_BYTES + 1)
        except OSError as exc:
            return None, f"unreadable: {exc}"
        if len(raw) > MAX_MODEL_BYTES:
            return None, f"more than {MAX_MODEL_BYTES} bytes"
        return raw, ""


def _child_env() -> dict[str, str]:
    # The child imports this package from where the worker does.
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def _problem(returncode: int, out: bytes) -> str | None:
    lines = out.decode(errors="replace").splitlines()
    said = [line[len(_VERDICT) :] for line in lines if line.startswith(_VERDICT)]
    if returncode == 0 and not said:
        return None
    if said:
        return said[-1][:500]
    last = (lines or ["no output"])[-1][:300]  # LightGBM prints its complaint first
    return f"the model parser crashed (exit status {returncode}: {last})"


_VERDICT = "verdict: "


def _check_file(path: str) -> int:
    """The child process: check the model in ``path``; the verdict as the exit
    status and a ``verdict:`` line on stdout."""
    try:
        with open(path, "rb") as f:
            model = parse_water_quality_model(f.read())
    except Exception as exc:
        print(f"{_VERDICT}{type(exc).__name__}: {exc}")
        return 1
    problem = serving_problem(model)
    if problem is not None:
        print(f"{_VERDICT}{problem}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_check_file(sys.argv[1]))
