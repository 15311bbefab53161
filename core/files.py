"""Writing a file so that a reader sees the old contents or the new, never half."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomic(path: str | Path, text: str, *, new_file_mode: int | None = None) -> None:
    """Replace ``path`` with ``text`` in one rename (``os.replace``), flushed to disk first.

    A running worker may read the file at any moment (a model file reloaded in
    place, a champion pointer). The file being replaced keeps its permissions;
    a new file gets ``new_file_mode``, or ``mkstemp``'s owner-only 0600 when None.
    """
    target = Path(path).absolute()
    try:
        mode: int | None = target.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = new_file_mode
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
