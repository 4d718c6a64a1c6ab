"""The zlib, zstd and lzma compressor plugins: exact roundtrip, bounded and checked decoding.

Each codec's output is also decoded by the reference library itself (stdlib zlib/lzma,
zstandard), so the plugins are checked against the real formats, not only against
themselves.
"""

from __future__ import annotations

import importlib
import lzma as std_lzma
import random
import sys
import zlib as std_zlib

import pytest
import zstandard

import plugins.compress.lzma as lzma_plugin
import plugins.compress.zlib as zlib_plugin
import plugins.compress.zstd as zstd_plugin
from harness.api.errors import ArtifactError, ConfigError
from harness.api.registry import Registry

MODULES = {"zlib": zlib_plugin, "zstd": zstd_plugin, "lzma": lzma_plugin}
CONFIGS = {"zlib": zlib_plugin.ZlibConfig, "zstd": zstd_plugin.ZstdConfig, "lzma": lzma_plugin.LzmaConfig}

# Decoders from the reference libraries, independent of the plugins.
REFERENCE_DECODE = {
    "zlib": std_zlib.decompress,
    "zstd": lambda data: zstandard.ZstdDecompressor().decompress(data),
    "lzma": lambda data: std_lzma.decompress(data, format=std_lzma.FORMAT_XZ),
}

codecs = pytest.mark.parametrize("codec", sorted(MODULES))


def _random_bytes(n: int) -> bytes:
    return random.Random(1234).randbytes(n)


def _structured_bytes() -> bytes:
    # int8-weight-like bytes (small magnitudes dominate) plus a repeated text block.
    rng = random.Random(99)
    weights = bytes(max(-127, min(127, round(rng.gauss(0, 12)))) & 0xFF for _ in range(6000))
    return weights + b"blocks.0.attn.c_q.weight " * 200


def _build(codec: str):
    return CONFIGS[codec]().build()


@codecs
@pytest.mark.parametrize("kind", ["random", "structured", "empty"])
def test_roundtrip_is_exact(codec: str, kind: str) -> None:
    data = {"random": _random_bytes(5000), "structured": _structured_bytes(), "empty": b""}[kind]
    comp = _build(codec)
    blob = comp.compress(data)
    assert comp.decompress(blob, max_output_size=len(data)) == data
    assert REFERENCE_DECODE[codec](blob) == data


@codecs
def test_structured_data_shrinks_and_output_is_deterministic(codec: str) -> None:
    data = _structured_bytes()
    comp = _build(codec)
    blob = comp.compress(data)
    assert len(blob) < len(data) // 2
    assert comp.compress(data) == blob


@codecs
def test_decompression_bound_is_enforced(codec: str) -> None:
    data = b"\x00" * 100_000  # a tiny blob expanding 100x: the shape of a decompression bomb
    comp = _build(codec)
    blob = comp.compress(data)
    assert len(blob) < 1000
    with pytest.raises(ArtifactError, match=codec):
        comp.decompress(blob, max_output_size=len(data) - 1)
    with pytest.raises(ArtifactError, match=codec):
        comp.decompress(blob, max_output_size=0)
    assert comp.decompress(blob, max_output_size=len(data)) == data


@codecs
@pytest.mark.parametrize("damage", ["garbage", "truncated", "trailing", "empty"])
def test_corrupt_input_raises_artifact_error(codec: str, damage: str) -> None:
    data = _structured_bytes()
    comp = _build(codec)
    blob = comp.compress(data)
    bad = {
        "garbage": b"this is not a compressed stream at all" * 3,
        "truncated": blob[: len(blob) // 2],
        "trailing": blob + b"\x00junk",
        "empty": b"",
    }[damage]
    with pytest.raises(ArtifactError, match=codec):
        comp.decompress(bad, max_output_size=10 * len(data))


@codecs
def test_registers_under_its_module_name(codec: str) -> None:
    module = MODULES[codec]
    registry = Registry()
    module.pg_register_components(registry=registry)
    assert registry.names("compressor") == [codec]
    component = registry.get("compressor", codec)
    assert component.config_cls is CONFIGS[codec]
    assert component.module == module.__name__
    assert module.__name__.rsplit(".", 1)[-1] == codec
    assert component.config_cls().build().name == codec


def test_plugin_modules_named_like_stdlib_still_use_the_stdlib() -> None:
    assert zlib_plugin.zlib is std_zlib
    assert lzma_plugin.lzma is std_lzma
    # A fresh import after the plugins must still resolve to the stdlib modules.
    assert importlib.import_module("zlib") is std_zlib
    assert importlib.import_module("lzma") is std_lzma


def test_lzma_extreme_preset_roundtrips_in_xz_container() -> None:
    comp = lzma_plugin.LzmaConfig(preset=6, extreme=True).build()
    data = _structured_bytes()
    blob = comp.compress(data)
    assert blob.startswith(b"\xfd7zXZ\x00")  # the xz magic
    assert comp.decompress(blob, max_output_size=len(data)) == data


@pytest.mark.parametrize(
    ("config_cls", "field", "value"),
    [
        (zlib_plugin.ZlibConfig, "level", 10),
        (zlib_plugin.ZlibConfig, "level", -1),
        (zlib_plugin.ZlibConfig, "level", "9"),
        (zstd_plugin.ZstdConfig, "level", 0),
        (zstd_plugin.ZstdConfig, "level", 23),
        (zstd_plugin.ZstdConfig, "level", True),
        (lzma_plugin.LzmaConfig, "preset", 10),
        (lzma_plugin.LzmaConfig, "extreme", 1),
    ],
)
def test_out_of_range_settings_name_the_field(config_cls: type, field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        config_cls(**{field: value})


def test_zstd_without_the_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import zstandard` raise ImportError.
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(ConfigError, match=r"pip install zstandard"):
        zstd_plugin.ZstdConfig().build()


def test_zstd_frame_without_declared_size_is_still_bounded() -> None:
    data = b"\x01" * 50_000
    # A streamed frame carries no content size, so the decoder cannot check it up front.
    cobj = zstandard.ZstdCompressor(level=3, write_content_size=False).compressobj()
    blob = cobj.compress(data) + cobj.flush()
    assert zstandard.frame_content_size(blob) == -1
    comp = _build("zstd")
    assert comp.decompress(blob, max_output_size=len(data)) == data
    with pytest.raises(ArtifactError, match="zstd"):
        comp.decompress(blob, max_output_size=len(data) - 1)
