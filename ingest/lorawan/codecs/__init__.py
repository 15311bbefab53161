"""Payload codecs for LoRaWAN uplinks.

The contract lives in :mod:`.base`; each implementation sits beside it with
its golden test vectors (``test_decode_<name>.json``). Look codecs up by name
with :func:`get_codec`.
"""

from ingest.lorawan.codecs._registry import (
    PROFILE_DIR,
    UnknownCodecError,
    available_codecs,
    get_codec,
)
from ingest.lorawan.codecs.base import Codec, DecodeResult
from ingest.lorawan.codecs.binary import BinaryProfileCodec
from ingest.lorawan.codecs.binary_profile import BinaryProfile, ProfileError, load_profile
from ingest.lorawan.codecs.cayenne_lpp import CayenneLppCodec, encode_lpp
from ingest.lorawan.codecs.passthrough import PassthroughCodec

__all__ = [
    "PROFILE_DIR",
    "BinaryProfile",
    "BinaryProfileCodec",
    "CayenneLppCodec",
    "Codec",
    "DecodeResult",
    "PassthroughCodec",
    "ProfileError",
    "UnknownCodecError",
    "available_codecs",
    "encode_lpp",
    "get_codec",
    "load_profile",
]
