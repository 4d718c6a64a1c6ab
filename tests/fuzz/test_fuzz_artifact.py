"""Fuzz the artifact reader (`harness.pipeline.artifact.load_state_dict`, the path every re-score
takes): real artifacts, written by `write_artifact` for each registered compressor and
quantizer, are mutated thousands of times and each must load sanely or fail with a
`PgolfError` — never another exception, a hang or a memory blow-up.

The seeds are files of the written format (version 2, zlib-compressed manifest) and, converted
by hand, of the old version 1 (plain JSON manifest with offsets, arrays by name), which the
reader still accepts. Mutation families: raw bytes anywhere (header, manifest, digest,
payload); the payload only, with the digest recomputed (a valid header over a corrupt body
reaches the decompressor); the manifest re-serialised with hostile values
(huge/negative/float/string shapes, numel overflow, deep nesting, NaN, wrong types), or its
JSON text byte-mutated, and the length field fixed up (re-compressed for version 2); manifests
whose layout is re-tiled consistently so odd shapes/dtypes reach the tensor decoder and the
quantizer; the header's length/version fields; pickle payloads (the ``torch.save`` attack);
and decompression bombs, which must be refused within the declared size.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import random
import struct
import tracemalloc
import zlib
from pathlib import Path

import pytest
import torch

from harness.api.errors import ArtifactError
from harness.api.quantization import host_bytes
from harness.pipeline.artifact import (
    _HEADER,
    DIGEST_BYTES,
    DTYPES,
    MAX_RAW_BYTES,
    load_state_dict,
    read_artifact,
    write_artifact,
)
from harness.pipeline.plugin_manager import full_manager
from tests.fuzz.conftest import Mutator, deep_nesting, dumps_hostile, fuzz_count, pickle_payload

DEFAULT_N = 2000


def _state() -> dict[str, torch.Tensor]:
    """A small state dict that exercises each int8 route: per-row int8, control fp32,
    passthrough fp16 and a bf16 tensor."""
    g = torch.Generator().manual_seed(0)
    return {
        "blocks.0.mlp.fc.weight": torch.randn(288, 256, generator=g),
        "blocks.0.attn_scale": torch.ones(64),
        "blocks.0.attn.c_q.weight": torch.randn(64, 64, generator=g),
        "tok_emb.weight": torch.randn(32, 64, generator=g).bfloat16(),
    }


@pytest.fixture(scope="module")
def registry():
    return full_manager().registry


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, registry) -> list[Path]:
    """int8 x every registered compressor, and every registered quantizer x zlib (defaults)."""
    out = tmp_path_factory.mktemp("artifacts")
    combos = [("int8", c) for c in registry.names("compressor")]
    combos += [(q, "zlib") for q in registry.names("quantizer") if q != "int8"]
    paths = []
    for qname, cname in combos:
        qcfg = registry.get("quantizer", qname).config_cls()
        ccfg = registry.get("compressor", cname).config_cls()
        path = out / f"model.{qname}.{cname}.pgolf"
        write_artifact(
            path,
            qcfg.build().quantize(_state()),
            quantizer_name=qname,
            quantizer_config=_json(qcfg),
            compressor=ccfg.build(),
            compressor_name=cname,
            compressor_config=_json(ccfg),
            extras={"arch": "gpt"},
        )
        paths.append(path)
    # The old format, which the reader must still accept (and survive when corrupted).
    for path in [p for p in paths if p.name in ("model.int8.zlib.pgolf", "model.intn.zlib.pgolf")]:
        old = path.with_name(path.name.replace(".pgolf", ".v1.pgolf"))
        old.write_bytes(_as_version_1(path, registry))
        paths.append(old)
    return paths


def _as_version_1(path: Path, registry) -> bytes:
    """The artifact at ``path`` rewritten in format version 1: plain JSON manifest with every
    array's offset and nbytes, arrays back to back by tensor name then key."""
    tensors, manifest = read_artifact(
        path, compressor_for=lambda n, c: registry.get("compressor", n).config_cls(**c).build()
    )
    chunks = [
        host_bytes(tensors[n].arrays[k]).tobytes() for n in sorted(tensors) for k in sorted(tensors[n].arrays)
    ]
    for spec in _arrays(manifest):
        spec.pop("offset"), spec.pop("nbytes")
    _retile(manifest, 1)
    comp = manifest["compressor"]
    codec = registry.get("compressor", comp["name"]).config_cls(**comp["config"]).build()
    manifest["format"] = "pgolf-artifact/1"
    return _join(json.dumps(manifest, sort_keys=True), codec.compress(b"".join(chunks)), version=1)


def _json(cfg: object) -> dict:
    from harness.pipeline.artifact import config_to_json

    return config_to_json(cfg)


# ----------------------------------------------------------------------------- file surgery


def _split(blob: bytes) -> tuple[dict, bytes, int]:
    """(manifest as stored, payload, version) of a well-formed artifact."""
    _magic, version, mlen = _HEADER.unpack_from(blob)
    start = _HEADER.size
    stored = blob[start : start + mlen]
    manifest = json.loads(zlib.decompress(stored) if version == 2 else stored)
    return manifest, blob[start + mlen + DIGEST_BYTES :], version


def _join(manifest_text: str | bytes, payload: bytes, version: int = 1) -> bytes:
    """An artifact with a correct header length and payload digest around these parts (the
    manifest text zlib-compressed for version 2, as that version stores it)."""
    mbytes = manifest_text.encode("utf-8") if isinstance(manifest_text, str) else manifest_text
    mbytes = zlib.compress(mbytes, 1) if version == 2 else mbytes
    return (
        _HEADER.pack(b"PGOLFAR1", version, len(mbytes)) + mbytes + hashlib.sha256(payload).digest() + payload
    )


def _arrays(manifest: dict) -> list[dict]:
    return [
        spec
        for name in sorted(manifest["tensors"])
        for _k, spec in sorted(manifest["tensors"][name]["arrays"].items())
    ]


def _nbytes(spec: dict) -> int:
    numel = 1
    for d in spec["shape"]:
        numel *= d
    return numel * DTYPES[spec["dtype"]].itemsize


def _retile(manifest: dict, version: int) -> None:
    """Recompute raw_bytes (and version 1's offsets and nbytes, in name order; version 2
    derives them) after shapes/dtypes changed, so the manifest passes the layout checks and
    the odd values reach the decoder."""
    offset = 0
    for spec in _arrays(manifest):
        if version == 1:
            spec["offset"], spec["nbytes"] = offset, _nbytes(spec)
        offset += _nbytes(spec)
    manifest["raw_bytes"] = offset


_HOSTILE_SHAPES = (
    [2**40, 2**40],
    [-1, 4],
    [1.5],
    ["7"],
    [2**64],
    [None],
    [True, 3],
    "64",
    64,
    {"0": 1},
    [],
    [0, 2**70],
    [2**62, 0, 2**62],
    [1] * 70,
    [2**31, 2**31, 2**31, 2**31],
)


_LOW_BIT = bytes(b & 1 for b in range(256))


class ArtifactMutator(Mutator):
    """Artifact-aware mutations on top of the generic ones."""

    def mutate(self, blob: bytes, registry, marker: Path) -> tuple[str, bytes]:
        kind = self.rng.choice(
            (
                "bytes",
                "bytes",
                "payload",
                "payload",
                "manifest",
                "manifest",
                "manifest_text",
                "shape",
                "retile",
                "header",
                "pickle",
            )
        )
        manifest, payload, v = _split(blob)
        if kind == "bytes":
            sub, out = self.bytes_(blob)
            return f"bytes:{sub}", out
        if kind == "payload":
            sub, body = self.bytes_(payload)
            return f"payload:{sub}", _join(json.dumps(manifest, sort_keys=True), body, v)
        if kind == "manifest":
            return "manifest:hostile", _join(dumps_hostile(self.json_value(manifest)), payload, v)
        if kind == "manifest_text":
            sub, text = self.bytes_(json.dumps(manifest, sort_keys=True).encode())
            return f"manifest_text:{sub}", _join(text, payload, v)
        if kind == "shape":
            self.rng.choice(_arrays(manifest))["shape"] = self.rng.choice(_HOSTILE_SHAPES)
            return "manifest:shape", _join(dumps_hostile(manifest), payload, v)
        if kind == "retile":
            return self._retiled(manifest, payload, registry, v)
        if kind == "header":
            buf = bytearray(blob)
            at = self.rng.choice((8, 10))  # version (u16) or manifest length (u32)
            return "header:int", bytes(self.overwrite_int(buf, at, "<H" if at == 8 else "<I"))
        bomb = pickle_payload(marker)
        if self.rng.random() < 0.5:
            return "pickle:file", bomb
        return "pickle:payload", _join(json.dumps(manifest, sort_keys=True), bomb, v)

    def _retiled(self, manifest: dict, payload: bytes, registry, v: int) -> tuple[str, bytes]:
        """A structurally valid artifact whose arrays have other shapes/dtypes/kinds/meta."""
        spec = self.rng.choice(_arrays(manifest))
        roll = self.rng.random()
        if roll < 0.4:
            numel = max(1, _nbytes(spec) // 4)
            spec["shape"] = self.rng.choice(
                ([numel, 1] + [1] * self.rng.choice((0, 3, 70)), [0, 2**70], [self.rng.randint(0, 99)])
            )
        elif roll < 0.6:
            spec["dtype"] = self.rng.choice(("bool", "int64", "float64", "uint8", "bfloat16"))
        elif roll < 0.8:
            name = self.rng.choice(sorted(manifest["tensors"]))
            manifest["tensors"][name]["meta"] = self.json_value(manifest["tensors"][name]["meta"])
        else:
            name = self.rng.choice(sorted(manifest["tensors"]))
            entry = manifest["tensors"][name]
            entry["kind"] = self.rng.choice(
                ("passthrough", "int8_row", "int8_tensor", "intn_row", "mixed", "", "x")
            )
        _retile(manifest, v)
        if manifest["raw_bytes"] > 2**24:  # too big to materialise: the declared size is the test
            return "retile:huge", _join(dumps_hostile(manifest), payload, v)
        n = manifest["raw_bytes"]
        # A random 512-byte tile, repeated: random enough for the decoders, and cheap to
        # compress (level-9 DEFLATE of incompressible bytes would dominate the test's time).
        raw = (self.rng.randbytes(512) * (n // 512 + 1))[:n]
        if self.rng.random() < 0.5:  # valid bools need 0/1 bytes; sometimes they get them
            raw = raw.translate(_LOW_BIT)
        comp = manifest["compressor"]
        codec = registry.get("compressor", comp["name"]).config_cls(**comp["config"]).build()
        return "retile:valid", _join(dumps_hostile(manifest), codec.compress(raw), v)


def _check_sane(path: Path, registry):
    """A successful load is sane: every array matches its manifest entry, and the state dict
    holds one finite-typed tensor per manifest tensor."""

    def check(result) -> None:
        state, manifest = result
        assert set(state) == set(manifest["tensors"]), "state dict names differ from the manifest"
        assert all(isinstance(t, torch.Tensor) for t in state.values())
        tensors, _m = read_artifact(
            path, compressor_for=lambda n, c: registry.get("compressor", n).config_cls(**c).build()
        )
        for name, qt in tensors.items():
            for key, arr in qt.arrays.items():
                spec = manifest["tensors"][name]["arrays"][key]
                assert list(arr.shape) == spec["shape"], (
                    f"{name}.{key}: shape {list(arr.shape)} != {spec['shape']}"
                )
                assert str(arr.dtype).removeprefix("torch.") == spec["dtype"]

    return check


def _fuzz(artifacts: list[Path], registry, tmp_path: Path, make_tally, n: int, seed: int) -> None:
    rng = random.Random(seed)
    mut = ArtifactMutator(rng)
    marker = tmp_path / "UNPICKLED"
    target = tmp_path / "fuzzed.pgolf"
    blobs = [(p.name, p.read_bytes()) for p in artifacts]
    tally = make_tally(f"artifact load_state_dict ({len(blobs)} real artifacts, seed {seed})")
    for i in range(n):
        _name, blob = blobs[i % len(blobs)]
        kind, data = mut.mutate(blob, registry, marker)
        target.write_bytes(data)
        tally.run(kind, lambda: load_state_dict(target, registry), _check_sane(target, registry))
    assert not marker.exists(), "a pickle payload was unpickled"
    assert sum(tally.outcomes.values()) == n


def test_fuzz_artifact_loader(artifacts, registry, tmp_path, tally_guard):
    _fuzz(artifacts, registry, tmp_path, tally_guard, DEFAULT_N, seed=7)


@pytest.mark.fuzz
def test_fuzz_artifact_loader_long(artifacts, registry, tmp_path, tally_guard, request):
    _fuzz(artifacts, registry, tmp_path, tally_guard, fuzz_count(request, DEFAULT_N), seed=70)


def test_unmutated_artifacts_load(artifacts, registry):
    """The fuzz seeds themselves are good artifacts (else every mutation would trivially fail)."""
    for path in artifacts:
        state, manifest = load_state_dict(path, registry)
        assert set(state) == set(_state())
        assert manifest["compressor"]["name"] in path.name


def _stored(manifest: dict, version: int) -> str:
    """A version 1 manifest as JSON text, or as version 2 writes it (no offsets or sizes)."""
    if version == 2:
        manifest = {**manifest, "format": "pgolf-artifact/2"}
        for entry in manifest["tensors"].values():
            entry["arrays"] = {
                k: {"dtype": a["dtype"], "shape": a["shape"]} for k, a in entry["arrays"].items()
            }
    return json.dumps(manifest, sort_keys=True)


@pytest.mark.parametrize(
    ("name", "version"), [("zlib", 1), ("zstd", 1), ("lzma", 1), ("ans", 1), ("brotli", 1), ("zlib", 2)]
)
def test_decompression_bomb_is_bounded(name, version, registry, tmp_path):
    """A payload that inflates to 16-32 MiB under a manifest declaring a few KiB is refused
    without ever holding much more than the declared size."""
    if name not in registry.names("compressor"):
        pytest.skip(f"compressor {name} not registered")
    manifest = {
        "format": "pgolf-artifact/1",
        "quantizer": {"name": "int8", "config": {}},
        "compressor": {"name": name, "config": {}},
        "raw_bytes": 4096,
        "extras": {},
        "tensors": {
            "w": {
                "kind": "passthrough",
                "meta": {},
                "arrays": {"q": {"dtype": "uint8", "shape": [4096], "offset": 0, "nbytes": 4096}},
            }
        },
    }
    codec = registry.get("compressor", name).config_cls().build()
    zeros = bytes(32 * 2**20 if name != "lzma" else 16 * 2**20)
    bomb = lzma.compress(zeros, preset=0) if name == "lzma" else codec.compress(zeros)
    assert len(bomb) < len(zeros) // 50
    path = tmp_path / "bomb.pgolf"
    path.write_bytes(_join(_stored(manifest, version), bomb, version))
    del zeros
    tracemalloc.start()
    try:
        with pytest.raises(ArtifactError, match=str(path.name)):
            load_state_dict(path, registry)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"peak {peak} bytes while refusing a bomb declared as 4096 bytes"


@pytest.mark.parametrize("version", [1, 2])
def test_declared_size_over_hard_limit_is_refused(version, registry, tmp_path):
    """raw_bytes beyond the hard global limit fails before any decompression."""
    n = MAX_RAW_BYTES // 2 + 1  # two arrays, each within the per-array bound, together over it
    arrays = {
        "a": {"dtype": "uint8", "shape": [n], "offset": 0, "nbytes": n},
        "b": {"dtype": "uint8", "shape": [n], "offset": n, "nbytes": n},
    }
    manifest = {
        "format": "pgolf-artifact/1",
        "quantizer": {"name": "int8", "config": {}},
        "compressor": {"name": "zlib", "config": {}},
        "raw_bytes": 2 * n,
        "extras": {},
        "tensors": {"w": {"kind": "passthrough", "meta": {}, "arrays": arrays}},
    }
    path = tmp_path / "huge.pgolf"
    path.write_bytes(_join(_stored(manifest, version), b"x", version))
    with pytest.raises(ArtifactError, match="raw_bytes"):
        load_state_dict(path, registry)


@pytest.mark.parametrize("version", [1, 2])
def test_deeply_nested_manifest_is_a_clean_error(version, tmp_path, registry):
    path = tmp_path / "deep.pgolf"
    path.write_bytes(_join(dumps_hostile({"format": deep_nesting(100_000)}), b"", version))
    with pytest.raises(ArtifactError, match="deep.pgolf"):
        load_state_dict(path, registry)


def test_pickle_file_is_rejected_not_loaded(tmp_path, registry):
    """What an upstream ``torch.save`` export boils down to is refused by its magic, unread."""
    marker = tmp_path / "UNPICKLED"
    path = tmp_path / "final_model.pt"
    path.write_bytes(pickle_payload(marker))
    with pytest.raises(ArtifactError, match="not a pgolf artifact"):
        load_state_dict(path, registry)
    assert not marker.exists()


def test_header_struct_is_little_endian():
    # The surgery helpers above assume the documented layout: magic, u16 version, u32 length.
    assert _HEADER.format == "<8sHI" and struct.calcsize(_HEADER.format) == 14
