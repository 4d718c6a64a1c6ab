"""The byte-shuffle + Brotli compressor (plugins/compress/brotli.py): the shuffle against
hand-written examples, the stream against the `brotli` library's own decoder, bounded and
checked decompression, and the shuffle's gain on int data."""

from __future__ import annotations

import random

import brotli
import numpy as np
import pytest

from harness.api.errors import ArtifactError, ConfigError
from plugins.compress.brotli import BrotliConfig, byte_shuffle, byte_unshuffle


def test_byte_shuffle_groups_bytes_by_position_modulo_the_stride():
    assert byte_shuffle(b"abcdefg", 2) == b"acegbdf"
    assert byte_shuffle(b"abcdefgh", 3) == b"adgbehcf"
    assert byte_shuffle(b"abc", 1) == b"abc" and byte_shuffle(b"", 4) == b""
    assert byte_unshuffle(b"acegbdf", 2) == b"abcdefg"
    assert byte_unshuffle(b"adgbehcf", 3) == b"abcdefgh"


@pytest.mark.parametrize("stride", [1, 2, 3, 4, 7])
def test_byte_unshuffle_inverts_byte_shuffle_at_every_length(stride):
    rng = random.Random(stride)
    for n in range(0, 40):
        data = rng.randbytes(n)
        assert byte_unshuffle(byte_shuffle(data, stride), stride) == data


def _structured_int_bytes() -> bytes:
    """int16 little-endian values of small magnitude (fp16-step- or int8-code-like planes)."""
    rng = np.random.default_rng(0)
    return np.clip(np.round(rng.normal(0, 20, 40_000)), -300, 300).astype("<i2").tobytes()


@pytest.mark.parametrize("kind", ["random", "structured", "empty", "odd"])
def test_roundtrip_is_exact_and_the_stream_is_plain_brotli_of_the_shuffled_bytes(kind):
    data = {
        "random": random.Random(1).randbytes(5000),
        "structured": _structured_int_bytes(),
        "empty": b"",
        "odd": b"parameter golf" * 37 + b"!",
    }[kind]
    codec = BrotliConfig().build()
    blob = codec.compress(data)
    assert codec.decompress(blob, max_output_size=len(data)) == data
    # The library's own decoder, then the inverse shuffle written out by hand.
    plain = brotli.decompress(blob)
    half = (len(data) + 1) // 2
    rebuilt = bytearray(len(data))
    rebuilt[0::2], rebuilt[1::2] = plain[:half], plain[half:]
    assert bytes(rebuilt) == data
    assert blob == brotli.compress(byte_shuffle(data, 2), quality=11)  # the record's call
    assert codec.compress(data) == blob  # deterministic


def _sizes(data: bytes) -> tuple[int, int]:
    return tuple(len(BrotliConfig(stride=s).build().compress(data)) for s in (2, 1))


def test_shuffle_makes_fp16_planes_smaller_and_leaves_int8_codes_alone():
    rng = np.random.default_rng(0)
    # fp16 weights: the exponent bytes gather in one plane (measured: 0.962x of Brotli alone).
    shuffled, alone = _sizes(rng.normal(0, 0.05, 100_000).astype(np.float16).tobytes())
    assert shuffled < 0.98 * alone, (shuffled, alone)
    # int6 codes one per byte (SDClip at 12.85 sigmas: code std 31/12.85): nothing to regroup.
    codes = np.clip(np.round(rng.normal(0, 31 / 12.85, 200_000)), -31, 31).astype(np.int8).tobytes()
    shuffled, alone = _sizes(codes)
    assert abs(shuffled - alone) < 0.005 * alone, (shuffled, alone)


def test_decompression_stops_at_the_bound():
    data = bytes(2_000_000)  # a tiny stream inflating 10,000-fold: a bomb's shape
    codec = BrotliConfig().build()
    blob = codec.compress(data)
    assert len(blob) < 200
    assert codec.decompress(blob, max_output_size=len(data)) == data
    with pytest.raises(ArtifactError, match="more than 1999999 bytes"):
        codec.decompress(blob, max_output_size=len(data) - 1)
    with pytest.raises(ArtifactError, match="brotli"):
        codec.decompress(blob, max_output_size=0)


def test_damaged_truncated_or_extended_streams_are_clear_errors():
    data = _structured_int_bytes()
    codec = BrotliConfig().build()
    blob = codec.compress(data)
    with pytest.raises(ArtifactError, match="brotli payload is truncated or corrupt"):
        codec.decompress(blob[: len(blob) // 2], max_output_size=len(data))
    with pytest.raises(ArtifactError, match="brotli payload is corrupt"):
        codec.decompress(blob + b"trailing", max_output_size=len(data))
    with pytest.raises(ArtifactError, match="brotli payload"):
        codec.decompress(b"\xff" * 64, max_output_size=len(data))
    flipped = bytearray(blob)
    flipped[len(blob) // 3] ^= 0x5A
    try:
        out = codec.decompress(bytes(flipped), max_output_size=len(data))
    except ArtifactError:
        return  # Brotli noticed the damage
    assert out != data  # no checksum in Brotli: the artifact's sha256 catches the rest


@pytest.mark.parametrize(
    "field,value", [("quality", 12), ("quality", -1), ("stride", 0), ("lgwin", 25), ("stride", True)]
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=field):
        BrotliConfig(**{field: value})
