"""zlib (DEFLATE) compressor: the codec of the naive baseline's ``final_model.int8.ptz``.

Upstream `train_gpt.py` (openai/parameter-golf, HEAD) compresses its int8 export with
``zlib.compress(..., level=9)``. Decompression here is bounded, so a crafted artifact cannot
expand into more memory than its manifest declares (a decompression bomb).

The module shares its name with the stdlib module; ``import zlib`` below still gets the
stdlib one because imports are absolute and ``plugins/compress`` is never on ``sys.path``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry
from harness.api.zlib_stream import inflate_bounded


@dataclass(frozen=True, kw_only=True)
class ZlibConfig:
    """Settings of the zlib compressor."""

    level: int = 9
    """DEFLATE effort, 0 (stored) to 9 (best); the baseline uses 9."""

    def __post_init__(self) -> None:
        if isinstance(self.level, bool) or not isinstance(self.level, int) or not 0 <= self.level <= 9:
            raise ConfigError(f"zlib level: expected an integer in 0..9, got {self.level!r}")

    def build(self) -> Zlib:
        """The compressor these settings describe."""
        return Zlib(level=self.level)


class Zlib:
    """zlib-format (RFC 1950) compression with a bounded decompressor."""

    name = "zlib"

    def __init__(self, level: int) -> None:
        self.level = level

    def compress(self, data: bytes) -> bytes:
        """``data`` as one zlib stream."""
        return zlib.compress(data, self.level)

    def decompress(self, data: bytes, max_output_size: int) -> bytes:
        """The bytes of the single zlib stream ``data``; at most ``max_output_size`` of them."""
        return inflate_bounded(data, max_output_size, "zlib payload")


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``zlib`` as a compressor."""
    registry.register("compressor", "zlib", ZlibConfig)
