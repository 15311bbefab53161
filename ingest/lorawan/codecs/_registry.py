"""Codec look-up by name: ``cayenne_lpp``, ``passthrough``, ``profile:<name>``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from ingest.lorawan.codecs.base import Codec
from ingest.lorawan.codecs.binary import BinaryProfileCodec
from ingest.lorawan.codecs.binary_profile import load_profile, profile_names
from ingest.lorawan.codecs.cayenne_lpp import CayenneLppCodec
from ingest.lorawan.codecs.passthrough import PassthroughCodec

__all__ = ["PROFILE_DIR", "PROFILE_PREFIX", "UnknownCodecError", "available_codecs", "get_codec"]

#: Where the shipped profiles live (``ingest/lorawan/profiles``).
PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"
PROFILE_PREFIX = "profile:"

# Profile names become file names: no separators, no leading dot.
_PROFILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

_BUILTIN: dict[str, Codec] = {
    CayenneLppCodec.name: CayenneLppCodec(),
    PassthroughCodec.name: PassthroughCodec(),
}


class UnknownCodecError(ValueError):
    """No codec is registered under the requested name."""


@lru_cache(maxsize=256)
def _profile_codec(name: str, directories: tuple[Path, ...]) -> BinaryProfileCodec:
    for directory in directories:
        path = directory / f"{name}.yaml"
        if path.is_file():
            profile = load_profile(path)
            if profile.name != name:
                raise UnknownCodecError(
                    f"{path}: declares name {profile.name!r}; it must match the file name"
                )
            return BinaryProfileCodec(profile)
    searched = ", ".join(str(d) for d in directories)
    raise UnknownCodecError(f"no profile {name!r} in {searched}")


def get_codec(name: str, *, profile_dirs: Sequence[str | Path] | None = None) -> Codec:
    """Return the codec registered under ``name``.

    Parameters
    ----------
    name : str
        ``"cayenne_lpp"``, ``"passthrough"`` or ``"profile:<profile name>"``.
    profile_dirs : sequence of path, optional
        Directories searched, in order, for ``<profile name>.yaml``; defaults
        to the shipped :data:`PROFILE_DIR`. Loaded profiles are cached.

    Raises
    ------
    UnknownCodecError
        Unknown name or missing profile.
    ProfileError
        The profile file exists but is invalid (a ``ValueError`` too).
    """
    if name in _BUILTIN:
        return _BUILTIN[name]
    if name.startswith(PROFILE_PREFIX):
        profile = name[len(PROFILE_PREFIX) :]
        if not _PROFILE_NAME.fullmatch(profile):
            raise UnknownCodecError(f"invalid profile name {profile!r}")
        dirs = tuple(Path(d).resolve() for d in (profile_dirs or (PROFILE_DIR,)))
        return _profile_codec(profile, dirs)
    raise UnknownCodecError(
        f"unknown codec {name!r}; expected one of {available_codecs(profile_dirs=profile_dirs)}"
    )


def available_codecs(*, profile_dirs: Sequence[str | Path] | None = None) -> list[str]:
    """Every codec name :func:`get_codec` can resolve."""
    dirs = [Path(d) for d in (profile_dirs or (PROFILE_DIR,))]
    return sorted(_BUILTIN) + [PROFILE_PREFIX + n for n in profile_names(dirs)]
