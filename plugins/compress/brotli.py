"""Byte shuffle + Brotli (quality 11): the compressor of the record of 2026-04-09.

Source: records/track_10min_16mb/2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT
(``_byte_shuffle``, ``_compress`` with ``COMPRESSOR=brotli``; docs/techniques.md §9.6). The
payload's bytes are regrouped by their position modulo the stride (every first byte, then every
second byte, ...), so the high bytes of fp16 steps sit together and the int8 codes of
neighbouring values form runs of similar bytes; then ``brotli.compress(quality=11)`` (the
`brotli` package, pinned in pyproject.toml because its output is the counted artifact).
Stride 2 is the record's; stride 1 is Brotli alone.

Bounded decompression: the decoder stops once its output buffer reaches the bound, so a
payload claiming a few bytes cannot inflate to gigabytes; a truncated, extended or damaged
stream raises `ArtifactError`.

**Difference:** the record prefixes the shuffled bytes with ``BSHF`` and the stride so that its
reader can tell shuffled from plain payloads; here the stride is in the compressor config,
which the artifact's manifest stores, so the payload carries no marker.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from harness.api.errors import ArtifactError, ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry


def _brotli() -> ModuleType:
    try:
        import brotli
    except ImportError:
        raise ConfigError("compressor brotli needs the 'brotli' package: pip install brotli") from None
    return brotli


@dataclass(frozen=True, kw_only=True)
class BrotliConfig:
    """Settings of the byte-shuffle + Brotli compressor (the record's by default)."""

    quality: int = 11
    """Brotli quality 0 (fast) to 11 (smallest; the record's)."""
    stride: int = 2
    """Byte-shuffle stride: byte i of every group of ``stride`` goes to plane i (1 = no shuffle)."""
    lgwin: int = 22
    """Base-2 logarithm of Brotli's sliding window, 10 to 24 (22 is the library's default, which
    the record uses)."""

    def __post_init__(self) -> None:
        for field, low, high in (("quality", 0, 11), ("stride", 1, 255), ("lgwin", 10, 24)):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise ConfigError(f"brotli {field}: expected an integer in {low}..{high}, got {v!r}")

    def build(self) -> Brotli:
        """The compressor these settings describe; ConfigError without ``brotli``."""
        return Brotli(self, module=_brotli())


def byte_shuffle(data: bytes, stride: int) -> bytes:
    """``data[0::stride] + data[1::stride] + ... + data[stride-1::stride]`` (any length)."""
    src = np.frombuffer(data, dtype=np.uint8)
    return b"".join(src[i::stride].tobytes() for i in range(stride)) if stride > 1 else bytes(data)


def byte_unshuffle(data: bytes, stride: int) -> bytes:
    """Inverse of `byte_shuffle`: plane i holds the ceil((n - i) / stride) bytes at i, i + stride, ..."""
    src = np.frombuffer(data, dtype=np.uint8)
    if stride <= 1:
        return bytes(data)
    out = np.empty_like(src)
    start = 0
    for i in range(stride):
        count = len(range(i, src.size, stride))
        out[i::stride] = src[start : start + count]
        start += count
    return out.tobytes()


class Brotli:
    """Byte shuffle, then one Brotli stream; bounded decompression."""

    name = "brotli"

    def __init__(self, cfg: BrotliConfig, module: ModuleType) -> None:
        self.cfg = cfg
        self._brotli = module

    def compress(self, data: bytes) -> bytes:
        """The shuffled ``data`` as one Brotli stream (deterministic for a given library version)."""
        shuffled = byte_shuffle(data, self.cfg.stride)
        return self._brotli.compress(shuffled, quality=self.cfg.quality, lgwin=self.cfg.lgwin)

    def decompress(self, data: bytes, max_output_size: int) -> bytes:
        """The bytes ``compress`` was given; at most ``max_output_size`` of them."""
        decoder = self._brotli.Decompressor()
        limit = max_output_size + 1  # one byte past the bound tells "too large" from "exactly full"
        try:
            parts = [decoder.process(data, output_buffer_limit=limit)]
            size = len(parts[0])
            # With the buffer full the decoder wants empty input until it has drained.
            while size < limit and not decoder.is_finished() and not decoder.can_accept_more_data():
                parts.append(decoder.process(b"", output_buffer_limit=limit - size))
                if not parts[-1]:
                    break
                size += len(parts[-1])
        except self._brotli.error as exc:
            raise ArtifactError(f"brotli payload is corrupt: {exc}") from None
        if size > max_output_size:
            raise ArtifactError(f"brotli payload decompresses to more than {max_output_size} bytes")
        if not decoder.is_finished():
            raise ArtifactError("brotli payload is truncated or corrupt (the stream does not end)")
        return byte_unshuffle(b"".join(parts), self.cfg.stride)


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``brotli`` as a compressor."""
    registry.register("compressor", "brotli", BrotliConfig)
