"""LZMA2 compressor in the xz container (stdlib ``lzma``).

Used by later records, e.g. PR #1573's int5 export (``lzma`` preset 9, see docs/techniques.md
§9.3). The xz container carries its own CRC64, so corruption is reported by the codec too.
Decompression is bounded in output size and in decoder memory, so a crafted file cannot
exhaust either.

The module shares its name with the stdlib module; ``import lzma`` below still gets the
stdlib one because imports are absolute and ``plugins/compress`` is never on ``sys.path``.
"""

from __future__ import annotations

import lzma
from dataclasses import dataclass

from harness.api.errors import ArtifactError, ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry

# Preset 9 (extreme or not) needs ~65 MiB to decode; a header asking for far more is hostile.
_DECODER_MEMLIMIT = 256 * 2**20


@dataclass(frozen=True, kw_only=True)
class LzmaConfig:
    """Settings of the xz/LZMA2 compressor."""

    preset: int = 9
    """xz preset 0 (fast) to 9 (smallest; 64 MiB dictionary)."""
    extreme: bool = False
    """Add ``PRESET_EXTREME``: slower search, sometimes a few bytes smaller."""

    def __post_init__(self) -> None:
        if isinstance(self.preset, bool) or not isinstance(self.preset, int) or not 0 <= self.preset <= 9:
            raise ConfigError(f"lzma preset: expected an integer in 0..9, got {self.preset!r}")
        if not isinstance(self.extreme, bool):
            raise ConfigError(f"lzma extreme: expected true or false, got {self.extreme!r}")

    def build(self) -> Lzma:
        """The compressor these settings describe."""
        return Lzma(preset=self.preset, extreme=self.extreme)


class Lzma:
    """xz-container LZMA2 compression with a bounded decompressor."""

    name = "lzma"

    def __init__(self, preset: int, extreme: bool) -> None:
        self.preset = preset | (lzma.PRESET_EXTREME if extreme else 0)

    def compress(self, data: bytes) -> bytes:
        """``data`` as one xz stream."""
        return lzma.compress(data, format=lzma.FORMAT_XZ, preset=self.preset)

    def decompress(self, data: bytes, max_output_size: int) -> bytes:
        """The bytes of the single xz stream ``data``; at most ``max_output_size`` of them."""
        decoder = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_DECODER_MEMLIMIT)
        try:
            # One byte over the bound is enough to know the bound is exceeded.
            out = decoder.decompress(data, max_length=max_output_size + 1)
        except lzma.LZMAError as exc:
            raise ArtifactError(f"lzma payload is corrupt (or needs over 256 MiB to decode): {exc}") from None
        if len(out) > max_output_size:
            raise ArtifactError(f"lzma payload decompresses to more than {max_output_size} bytes")
        if not decoder.eof:
            raise ArtifactError("lzma payload is corrupt: the xz stream is truncated")
        if decoder.unused_data:
            raise ArtifactError(
                f"lzma payload is corrupt: {len(decoder.unused_data)} bytes after the xz stream"
            )
        return out


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``lzma`` as a compressor."""
    registry.register("compressor", "lzma", LzmaConfig)
