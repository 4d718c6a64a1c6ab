"""The pickle-free artifact container: exact roundtrips, the documented byte layout, tampering.

The file layout is parsed and re-assembled here by hand from the spec (magic, u16 version,
u32 manifest length, zlib-compressed JSON, sha256, payload; version 1: plain JSON, arrays by
name) with `struct`, `json`, `hashlib` and stdlib `zlib`, so the reader is tested against the
format, not against the writer alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import zlib
from pathlib import Path

import pytest
import torch

import plugins.compress.lzma as lzma_plugin
import plugins.compress.zlib as zlib_plugin
import plugins.compress.zstd as zstd_plugin
import plugins.quant.int8 as int8_plugin
from harness.api.errors import ArtifactError
from harness.api.protocols import QTensor
from harness.api.registry import Registry
from harness.pipeline.artifact import (
    ArtifactInfo,
    config_to_json,
    load_state_dict,
    read_artifact,
    read_manifest,
)
from tests.artifact_files import write_with_configs

CONFIGS = {"zlib": zlib_plugin.ZlibConfig, "zstd": zstd_plugin.ZstdConfig, "lzma": lzma_plugin.LzmaConfig}
WHITELIST = {
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "bool": torch.bool,
}
HEADER = struct.Struct("<8sHI")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _compressor_for(name: str, config: dict):
    return CONFIGS[name](**config).build()


def _random_array(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Random bit patterns of ``dtype`` (NaN payloads and all), so equality is bitwise."""
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    nbytes = torch.empty(0, dtype=dtype).element_size() * int(torch.tensor(shape).prod())
    return torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=g).view(dtype).reshape(shape)


def _all_dtype_tensors() -> dict[str, QTensor]:
    tensors: dict[str, QTensor] = {}
    for i, (name, dtype) in enumerate(WHITELIST.items()):
        tensors[f"t.{name}"] = QTensor(
            kind="raw",
            arrays={"a": _random_array(dtype, (3, 5), i), "scalar": _random_array(dtype, (), 100 + i)},
            meta={"dtype": name, "note": [1, 2.5, None, "x"]},
        )
    tensors["t.empty"] = QTensor("raw", {"e": torch.empty(0, 4, dtype=torch.float32)}, {})
    return tensors


def _write(
    path: Path, tensors: dict[str, QTensor], codec: str = "zlib", extras: dict | None = None
) -> ArtifactInfo:
    return write_with_configs(
        path, tensors, ("int8", int8_plugin.Int8Config()), (codec, CONFIGS[codec]()), extras=extras
    )


def _split(blob: bytes) -> tuple[bytes, int, dict, bytes, bytes]:
    """(magic, version, manifest as stored, digest, payload) parsed by the documented layout."""
    magic, version, mlen = HEADER.unpack_from(blob)
    start = HEADER.size
    stored = blob[start : start + mlen]
    manifest = json.loads((zlib.decompress(stored) if version == 2 else stored).decode("utf-8"))
    digest = blob[start + mlen : start + mlen + 32]
    return magic, version, manifest, digest, blob[start + mlen + 32 :]


def _assemble(manifest: dict | bytes, payload: bytes, magic: bytes = b"PGOLFAR1", version: int = 2) -> bytes:
    """A file with a correct payload digest (so only what the test changed is wrong); a dict
    manifest is stored as the version says (zlib-9 JSON for 2, plain JSON for 1)."""
    if isinstance(manifest, dict):
        manifest = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        manifest = zlib.compress(manifest, 9) if version == 2 else manifest
    return HEADER.pack(magic, version, len(manifest)) + manifest + hashlib.sha256(payload).digest() + payload


def _read(path: Path, **kw):
    return read_artifact(path, compressor_for=_compressor_for, **kw)


@pytest.mark.parametrize("codec", sorted(CONFIGS))
def test_every_whitelisted_dtype_roundtrips_bit_exactly(tmp_path: Path, codec: str) -> None:
    tensors = _all_dtype_tensors()
    info = _write(tmp_path / "a.pgaf", tensors, codec=codec, extras={"seed": 1337, "tag": "ü"})
    got, manifest = _read(tmp_path / "a.pgaf")
    assert set(got) == set(tensors)
    for name, qt in tensors.items():
        assert got[name].kind == qt.kind and got[name].meta == qt.meta
        assert set(got[name].arrays) == set(qt.arrays)
        for key, arr in qt.arrays.items():
            back = got[name].arrays[key]
            assert back.dtype == arr.dtype and back.shape == arr.shape, (name, key)
            assert torch.equal(back.reshape(-1).view(torch.uint8), arr.reshape(-1).view(torch.uint8)), (
                name,
                key,
            )
    assert manifest["extras"] == {"seed": 1337, "tag": "ü"}
    assert manifest["compressor"] == {"name": codec, "config": config_to_json(CONFIGS[codec]())}
    assert manifest["raw_bytes"] == info.raw_bytes


def test_file_layout_matches_the_documented_format(tmp_path: Path) -> None:
    tensors = _all_dtype_tensors()
    info = _write(tmp_path / "a.pgaf", tensors)
    blob = (tmp_path / "a.pgaf").read_bytes()
    magic, version, manifest, digest, payload = _split(blob)
    assert magic == b"PGOLFAR1" and version == 2
    mlen = HEADER.unpack_from(blob)[2]
    text = zlib.decompress(blob[HEADER.size : HEADER.size + mlen]).decode()
    assert text == json.dumps(manifest, sort_keys=True, separators=(",", ":"))  # compact, sorted
    assert manifest["format"] == "pgolf-artifact/2"
    assert digest == hashlib.sha256(payload).digest()
    # raw = every array's bytes, tensors by sorted name, arrays by sorted key ("raw" is not a
    # quantized kind, so every array here is in the last role group).
    expected_raw = b"".join(
        tensors[n].arrays[k].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        for n in sorted(tensors)
        for k in sorted(tensors[n].arrays)
    )
    assert zlib.decompress(payload) == expected_raw
    # Offsets and sizes are not stored; the reader derives them.
    assert manifest["tensors"]["t.float32"]["arrays"]["a"] == {"dtype": "float32", "shape": [3, 5]}
    spec = read_manifest(tmp_path / "a.pgaf")["tensors"]["t.float32"]["arrays"]["a"]
    assert spec["nbytes"] == 60 and spec["offset"] == expected_raw.index(
        tensors["t.float32"].arrays["a"].view(torch.uint8).numpy().tobytes()
    )
    assert info == ArtifactInfo(
        path=str(tmp_path / "a.pgaf"),
        bytes_on_disk=len(blob),
        raw_bytes=len(expected_raw),
        sha256=hashlib.sha256(blob).hexdigest(),
    )


def test_same_tensors_give_identical_files(tmp_path: Path) -> None:
    tensors = _all_dtype_tensors()
    reordered = dict(reversed(list(tensors.items())))
    _write(tmp_path / "a.pgaf", tensors, codec="zstd")
    _write(tmp_path / "b.pgaf", reordered, codec="zstd")
    assert (tmp_path / "a.pgaf").read_bytes() == (tmp_path / "b.pgaf").read_bytes()


def test_refuses_to_overwrite_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "a.pgaf"
    _write(path, _all_dtype_tensors())
    before = path.read_bytes()
    other = {"x": QTensor("raw", {"a": torch.ones(3)}, {})}
    with pytest.raises(ArtifactError, match="overwrite"):
        _write(path, other)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["a.pgaf"]


def test_flipped_payload_byte_is_a_digest_error(tmp_path: Path) -> None:
    path = tmp_path / "a.pgaf"
    _write(path, _all_dtype_tensors())
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0x01
    (tmp_path / "bad.pgaf").write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="payload sha256 mismatch"):
        _read(tmp_path / "bad.pgaf")


@pytest.mark.parametrize(
    ("magic", "version", "match"),
    [
        (b"PGOLFAR2", 1, "not a pgolf artifact"),
        (b"PK\x03\x04xxxx", 1, "magic"),
        (b"PGOLFAR1", 3, "version 3"),
        (b"PGOLFAR1", 0, "version 0"),
    ],
)
def test_wrong_magic_or_version_is_refused(tmp_path: Path, magic: bytes, version: int, match: str) -> None:
    _write(tmp_path / "a.pgaf", _all_dtype_tensors())
    _, _, manifest, _, payload = _split((tmp_path / "a.pgaf").read_bytes())
    (tmp_path / "bad.pgaf").write_bytes(_assemble(manifest, payload, magic=magic, version=version))
    with pytest.raises(ArtifactError, match=match) as err:
        _read(tmp_path / "bad.pgaf")
    assert "bad.pgaf" in str(err.value)
    with pytest.raises(ArtifactError, match=match):
        read_manifest(tmp_path / "bad.pgaf")


@pytest.mark.parametrize("keep", [0, 5, 13, 40, -33, -1])
def test_truncated_file_is_refused(tmp_path: Path, keep: int) -> None:
    _write(tmp_path / "a.pgaf", _all_dtype_tensors())
    blob = (tmp_path / "a.pgaf").read_bytes()
    (tmp_path / "bad.pgaf").write_bytes(blob[:keep] if keep >= 0 else blob[: len(blob) + keep])
    with pytest.raises(ArtifactError, match="bad.pgaf"):
        _read(tmp_path / "bad.pgaf")


def _edit_spec(manifest: dict, field: str, value: object) -> dict:
    manifest["tensors"]["t.int16"]["arrays"]["a"][field] = value
    return manifest


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda m: _edit_spec(m, "shape", [3, 6]),
            r"raw_bytes: expected 534 .*got 528",
        ),  # 16 x (1+1+2+4+8+2+2+4+8+1)
        (lambda m: _edit_spec(m, "offset", 0), r"t\.int16\.arrays\.a: expected keys dtype, shape"),
        (lambda m: _edit_spec(m, "nbytes", 30), r"t\.int16\.arrays\.a: expected keys dtype, shape"),
        (
            lambda m: _edit_spec(m, "dtype", "complex64"),
            r"t\.int16\.arrays\.a\.dtype: 'complex64' is not allowed",
        ),
        (lambda m: _edit_spec(m, "dtype", "object"), "dtype"),
        (lambda m: _edit_spec(m, "shape", [3, -5]), "shape"),
        (lambda m: {**m, "raw_bytes": m["raw_bytes"] + 8}, "raw_bytes"),
        (lambda m: {**m, "format": "pgolf-artifact/0"}, "format"),
        (lambda m: {**m, "format": "pgolf-artifact/1"}, r"format: expected 'pgolf-artifact/2' \(version 2\)"),
        (lambda m: {k: v for k, v in m.items() if k != "extras"}, "manifest keys"),
        (lambda m: {**m, "compressor": {"name": 3, "config": {}}}, "compressor"),
    ],
)
def test_edited_manifest_is_refused_naming_the_field(tmp_path: Path, edit, match: str) -> None:
    _write(tmp_path / "a.pgaf", _all_dtype_tensors())
    _, _, manifest, _, payload = _split((tmp_path / "a.pgaf").read_bytes())
    (tmp_path / "bad.pgaf").write_bytes(_assemble(edit(manifest), payload))
    with pytest.raises(ArtifactError, match=match):
        _read(tmp_path / "bad.pgaf")


def test_manifest_that_is_not_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.pgaf").write_bytes(_assemble(zlib.compress(b"{not json"), zlib.compress(b"")))
    with pytest.raises(ArtifactError, match="JSON"):
        read_manifest(tmp_path / "bad.pgaf")
    (tmp_path / "bad1.pgaf").write_bytes(_assemble(b"{not json", zlib.compress(b""), version=1))
    with pytest.raises(ArtifactError, match="JSON"):
        read_manifest(tmp_path / "bad1.pgaf")


@pytest.mark.parametrize(
    ("stored", "match"),
    [
        (b'{"format":"pgolf-artifact/2"}', "not a valid zlib stream"),  # version 1's plain JSON
        (zlib.compress(b"{}")[:-3], "truncated"),
        (zlib.compress(b"{}") + b"xx", "2 bytes after its zlib stream"),
        (zlib.compress(b" " * (64 * 2**20 + 1), 9), "decompresses to more than 67108864 bytes"),  # a bomb
    ],
)
def test_version_2_manifest_stream_is_checked_and_bounded(tmp_path: Path, stored: bytes, match: str) -> None:
    (tmp_path / "bad.pgaf").write_bytes(_assemble(stored, zlib.compress(b"")))
    with pytest.raises(ArtifactError, match=match):
        read_manifest(tmp_path / "bad.pgaf")


def _as_version_1(tensors: dict[str, QTensor], manifest: dict) -> bytes:
    """A version 1 file of ``tensors`` built by hand from the old spec: plain JSON with every
    array's offset and nbytes, arrays back to back by tensor name then key."""
    chunks, offset = [], 0
    for name in sorted(tensors):
        for key in sorted(tensors[name].arrays):
            data = tensors[name].arrays[key].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            manifest["tensors"][name]["arrays"][key].update(offset=offset, nbytes=len(data))
            chunks.append(data)
            offset += len(data)
    return _assemble({**manifest, "format": "pgolf-artifact/1"}, zlib.compress(b"".join(chunks)), version=1)


def test_version_1_files_still_load(tmp_path: Path) -> None:
    sd = _state_dict()
    tensors = int8_plugin.Int8Config().build().quantize(sd)
    _write_quantized(tmp_path / "v2.pgaf", int8_plugin.Int8Config())
    _, _, manifest, _, _ = _split((tmp_path / "v2.pgaf").read_bytes())
    (tmp_path / "v1.pgaf").write_bytes(_as_version_1(tensors, manifest))
    got, back = _read(tmp_path / "v1.pgaf")
    assert back["format"] == "pgolf-artifact/1"
    for name, qt in tensors.items():
        for key, arr in qt.arrays.items():
            assert torch.equal(got[name].arrays[key], arr), (name, key)
    old, _ = load_state_dict(tmp_path / "v1.pgaf", _registry())
    new, _ = load_state_dict(tmp_path / "v2.pgaf", _registry())
    assert all(torch.equal(old[k], new[k]) for k in sd)
    # Version 2 keeps codes, then scales, then the rest; version 1 kept each tensor's together.
    v2 = read_manifest(tmp_path / "v2.pgaf")["tensors"]
    assert v2["tok_emb.weight"]["arrays"]["q"]["offset"] == 0
    assert v2["tok_emb.weight"]["arrays"]["scale"]["offset"] == 300 * 256
    assert v2["blocks.0.attn_scale"]["arrays"]["w"]["offset"] == 300 * 256 + 300 * 2


def test_version_1_manifest_must_keep_its_offsets(tmp_path: Path) -> None:
    tensors = int8_plugin.Int8Config().build().quantize(_state_dict())
    _write_quantized(tmp_path / "v2.pgaf", int8_plugin.Int8Config())
    _, _, manifest, _, _ = _split((tmp_path / "v2.pgaf").read_bytes())
    _, _, v1, _, payload = _split(_as_version_1(tensors, manifest))
    del v1["tensors"]["step"]["arrays"]["w"]["offset"]
    (tmp_path / "bad.pgaf").write_bytes(_assemble(v1, payload, version=1))
    with pytest.raises(ArtifactError, match=r"step\.arrays\.w: expected keys dtype, nbytes, offset, shape"):
        _read(tmp_path / "bad.pgaf")


def test_payload_larger_than_declared_is_a_bounded_error(tmp_path: Path) -> None:
    # A correct digest over a payload that expands past raw_bytes: a decompression bomb.
    _write(tmp_path / "a.pgaf", _all_dtype_tensors())
    _, _, manifest, _, payload = _split((tmp_path / "a.pgaf").read_bytes())
    bomb = zlib.compress(zlib.decompress(payload) + b"\x00" * 1_000_000, 9)
    (tmp_path / "bad.pgaf").write_bytes(_assemble(manifest, bomb))
    with pytest.raises(ArtifactError, match="more than"):
        _read(tmp_path / "bad.pgaf")


def test_max_raw_bytes_is_enforced(tmp_path: Path) -> None:
    info = _write(tmp_path / "a.pgaf", _all_dtype_tensors())
    with pytest.raises(ArtifactError, match="max_raw_bytes"):
        _read(tmp_path / "a.pgaf", max_raw_bytes=info.raw_bytes - 1)
    tensors, _ = _read(tmp_path / "a.pgaf", max_raw_bytes=info.raw_bytes)
    assert len(tensors) == len(_all_dtype_tensors())


def test_bool_array_with_invalid_bytes_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "a.pgaf", {"m": QTensor("raw", {"b": torch.tensor([True, False, True])}, {})})
    _, _, manifest, _, _ = _split((tmp_path / "a.pgaf").read_bytes())
    (tmp_path / "bad.pgaf").write_bytes(_assemble(manifest, zlib.compress(b"\x01\x02\x00")))
    with pytest.raises(ArtifactError, match=r"m\.arrays\.b.*bool"):
        _read(tmp_path / "bad.pgaf")


def test_writer_refuses_bad_inputs_and_writes_nothing(tmp_path: Path) -> None:
    complex_arr = {"c": QTensor("raw", {"a": torch.zeros(2, dtype=torch.complex64)}, {})}
    with pytest.raises(ArtifactError, match=r"tensor c array 'a' has dtype complex64"):
        _write(tmp_path / "a.pgaf", complex_arr)
    nan_meta = {"c": QTensor("raw", {"a": torch.zeros(2)}, {"clip": float("nan")})}
    with pytest.raises(ArtifactError, match="JSON"):
        _write(tmp_path / "a.pgaf", nan_meta)
    tensor_meta = {"c": QTensor("raw", {"a": torch.zeros(2)}, {"t": torch.zeros(1)})}
    with pytest.raises(ArtifactError, match="JSON"):
        _write(tmp_path / "a.pgaf", tensor_meta)
    assert os.listdir(tmp_path) == []


def test_missing_file_is_an_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="nope.pgaf"):
        read_manifest(tmp_path / "nope.pgaf")


def _forbid(*_args, **_kwargs):
    raise AssertionError("pickle/torch.load must never be used to read an artifact")


def _registry() -> Registry:
    registry = Registry()
    int8_plugin.pg_register_components(registry=registry)
    zlib_plugin.pg_register_components(registry=registry)
    return registry


def _state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "tok_emb.weight": torch.randn(300, 256, generator=g),  # int8_row
        "blocks.0.attn_scale": torch.randn(64, generator=g),  # control: fp32 passthrough
        "blocks.0.gate": torch.randn(64, generator=g),
        "blocks.0.mlp.fc.weight": torch.randn(64, 64, generator=g).to(torch.bfloat16),  # fp16 passthrough
        "step": torch.tensor(7),
    }


def _write_quantized(path: Path, cfg: int8_plugin.Int8Config) -> dict[str, torch.Tensor]:
    sd = _state_dict()
    zlib6 = ("zlib", zlib_plugin.ZlibConfig(level=6))
    write_with_configs(path, cfg.build().quantize(sd), ("int8", cfg), zlib6)
    return sd


def test_load_state_dict_recovers_the_model_from_the_file_alone(tmp_path: Path) -> None:
    # control_patterns goes through JSON as a list; Int8Config only accepts a tuple, and the
    # custom pattern only takes effect if the config really was rebuilt from the manifest.
    cfg = int8_plugin.Int8Config(control_patterns=("gate",))
    sd = _write_quantized(tmp_path / "m.pgaf", cfg)
    out, manifest = load_state_dict(tmp_path / "m.pgaf", _registry())
    assert manifest["quantizer"] == {"name": "int8", "config": config_to_json(cfg)}
    assert set(out) == set(sd)
    for name, t in sd.items():
        assert out[name].dtype == t.dtype and out[name].shape == t.shape, name
    assert torch.equal(out["blocks.0.gate"], sd["blocks.0.gate"])  # fp32: "gate" is a control name here
    assert torch.equal(out["blocks.0.attn_scale"], sd["blocks.0.attn_scale"].half().float())
    assert torch.equal(out["step"], sd["step"])
    assert torch.equal(out["blocks.0.mlp.fc.weight"], sd["blocks.0.mlp.fc.weight"].half().bfloat16())
    err = (out["tok_emb.weight"] - sd["tok_emb.weight"]).abs().max()
    assert float(err) < 0.03  # |w| <= ~4.5 per row: Δ ≈ 0.035, so error ≈ Δ/2


def test_reading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_quantized(tmp_path / "m.pgaf", int8_plugin.Int8Config())
    for target, attr in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(target, attr, _forbid)
    out, _ = load_state_dict(tmp_path / "m.pgaf", _registry())
    tensors, _ = _read(tmp_path / "m.pgaf")
    assert len(out) == len(tensors) == len(_state_dict())


def test_load_state_dict_names_an_unregistered_component(tmp_path: Path) -> None:
    _write_quantized(tmp_path / "m.pgaf", int8_plugin.Int8Config())
    registry = Registry()
    int8_plugin.pg_register_components(registry=registry)
    with pytest.raises(ArtifactError, match=r"m\.pgaf.*compressor 'zlib'"):
        load_state_dict(tmp_path / "m.pgaf", registry)


def test_load_state_dict_refuses_a_config_that_does_not_fit(tmp_path: Path) -> None:
    _write_quantized(tmp_path / "m.pgaf", int8_plugin.Int8Config())
    _, _, manifest, _, payload = _split((tmp_path / "m.pgaf").read_bytes())
    manifest["quantizer"]["config"]["bits"] = 6
    (tmp_path / "bad.pgaf").write_bytes(_assemble(manifest, payload))
    with pytest.raises(ArtifactError, match="quantizer"):
        load_state_dict(tmp_path / "bad.pgaf", _registry())


def test_config_to_json_turns_tuples_into_lists() -> None:
    data = config_to_json(int8_plugin.Int8Config(control_patterns=("a", "b")))
    assert data == {
        "passthrough_max_numel": 65536,
        "clip_quantile": 0.9999984,
        "control_patterns": ["a", "b"],
    }
    assert json.loads(json.dumps(data)) == data
    assert config_to_json(lzma_plugin.LzmaConfig(extreme=True)) == {"preset": 9, "extreme": True}
