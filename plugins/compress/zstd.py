"""Zstandard compressor (the ``zstandard`` package), level 22 by default.

From record T1/PR #560 (docs/techniques.md §9.2), which compresses its int5/int6 export with
``zstandard.ZstdCompressor(level=22)``. Unlike that record, a missing package is an error,
never a silent fall-back to zlib: the fall-back changes the artifact size (docs/pitfalls.md §13,
docs/techniques.md §13 row 15). The package is imported when the compressor is built, not at module import.

Bounded decompression: a frame that declares its content size is checked against the bound
before anything is allocated; a frame without one is decoded into a buffer of at most the
bound, and zstd fails if the output does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from harness.api.errors import ArtifactError, ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry

_MAX_LEVEL = 22  # zstandard.MAX_COMPRESSION_LEVEL; kept here so configs validate without the package


def _zstandard() -> ModuleType:
    try:
        import zstandard
    except ImportError:
        raise ConfigError("compressor zstd needs the 'zstandard' package: pip install zstandard") from None
    return zstandard


@dataclass(frozen=True, kw_only=True)
class ZstdConfig:
    """Settings of the Zstandard compressor."""

    level: int = 22
    """Compression level 1 (fast) to 22 (smallest, 128 MiB window for large inputs)."""

    def __post_init__(self) -> None:
        if (
            isinstance(self.level, bool)
            or not isinstance(self.level, int)
            or not 1 <= self.level <= _MAX_LEVEL
        ):
            raise ConfigError(f"zstd level: expected an integer in 1..{_MAX_LEVEL}, got {self.level!r}")

    def build(self) -> Zstd:
        """The compressor these settings describe; ConfigError without ``zstandard``."""
        return Zstd(level=self.level, module=_zstandard())


class Zstd:
    """One zstd frame (content size in the header) with a bounded decompressor."""

    name = "zstd"

    def __init__(self, level: int, module: ModuleType) -> None:
        self.level = level
        self._zstd = module

    def compress(self, data: bytes) -> bytes:
        """``data`` as one zstd frame; single-threaded, so the bytes are reproducible."""
        return self._zstd.ZstdCompressor(level=self.level).compress(data)

    def decompress(self, data: bytes, max_output_size: int) -> bytes:
        """The bytes of the single zstd frame ``data``; at most ``max_output_size`` of them."""
        zstd = self._zstd
        try:
            declared = zstd.frame_content_size(data)
        except zstd.ZstdError as exc:
            raise ArtifactError(f"zstd payload is corrupt: {exc}") from None
        # The C backend returns -1 for "no size in the header"; the package's CONTENTSIZE_*
        # constants spell unknown/error as 2**64 - 1 / 2**64 - 2, so both count as unknown.
        known = 0 <= declared < zstd.CONTENTSIZE_ERROR
        if known and declared > max_output_size:
            raise ArtifactError(
                f"zstd payload declares {declared} bytes, more than the bound {max_output_size}"
            )
        try:
            # With a declared size the decoder allocates exactly that (checked above); without
            # one it allocates max_output_size. 0 would mean "unbounded", hence the max(..., 1).
            out = zstd.ZstdDecompressor().decompress(
                data, max_output_size=max(max_output_size, 1), allow_extra_data=False
            )
        except zstd.ZstdError as exc:
            # Without a declared size, "did not fit" and "truncated" are the same zstd error.
            bound = "" if known else f" or decompresses to more than {max_output_size} bytes"
            raise ArtifactError(f"zstd payload is corrupt{bound}: {exc}") from None
        if len(out) > max_output_size:
            raise ArtifactError(f"zstd payload decompresses to more than {max_output_size} bytes")
        return out


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``zstd`` as a compressor."""
    registry.register("compressor", "zstd", ZstdConfig)
