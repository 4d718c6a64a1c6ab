"""The pickle-free artifact container: quantized tensors + JSON manifest + one compressed payload.

Upstream records `torch.save` their quantized dict and compress it; reading one back is
`torch.load`, i.e. unpickling third-party data (docs/pitfalls.md §11 lists the RCE advisories,
including bypasses of ``weights_only=True``). This container (docs/formats.md §2), adapted from
a proposed pickle-free layout of several segments (here one), stores only raw array bytes
described by JSON, so decoding is bytes -> numbers and nothing else. The harness owns the
format; no plugin can change it.

File layout (integers little-endian)::

    magic     8 B   b"PGOLFAR1"
    version   u16   FORMAT_VERSION (2; version 1 files are still read)
    mlen      u32   manifest length
    manifest  mlen  zlib-9 of UTF-8 JSON, compact, sorted keys (version 1: the JSON itself)
    digest    32 B  sha256 of the payload
    payload   rest  compressor.compress(raw); raw = every array's bytes, back to back

Arrays are laid out in a canonical order (`artifact_manifest.array_order`: codes, then scales,
then the rest, each by name; version 1: by name), so the same tensors always give the same
file. Reading validates everything before use and bounds decompression by the manifest's
``raw_bytes`` (decompression bombs).

Longer than 400 lines because it is the whole artifact format, writer and bounded reader
together (header, manifest, payload, hash, config JSON), so the format is defined once and the
reader's checks sit next to what the writer produces.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from harness.api.by_name import LAYOUT_MODULE, import_by_name
from harness.api.errors import ArtifactError, PgolfError
from harness.api.fileio import write_atomic
from harness.api.protocols import Compressor, LayoutAwareCompressor, QTensor
from harness.api.quantization import dtype_name, host_bytes
from harness.api.registry import Registry
from harness.pipeline.artifact_manifest import (
    DERIVED_KEYS,
    FORMAT_NAMES,
    WRITTEN_VERSION,
    array_order,
    decode_manifest,
    encode_manifest,
)

MAGIC = b"PGOLFAR1"
FORMAT_VERSION = WRITTEN_VERSION
FORMAT_NAME = FORMAT_NAMES[FORMAT_VERSION]
DIGEST_BYTES = 32
_HEADER = struct.Struct("<8sHI")  # magic, version, manifest length

# The only dtypes an artifact may hold: fixed-size, with a well-defined byte image.
DTYPES: dict[str, torch.dtype] = {
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

_MANIFEST_KEYS = {"format", "quantizer", "compressor", "raw_bytes", "tensors", "extras"}

MAX_RAW_BYTES = 2**31
"""Hard limit on an artifact's decompressed size, whatever its manifest declares (a 16 MB
artifact of int8 weights is far below it; a bomb's claim is not)."""
MAX_NDIM = 16
"""Most dimensions an array may declare (weights have at most 4)."""


@dataclass(frozen=True)
class ArtifactInfo:
    """What `write_artifact` wrote: the file, its size, the raw array bytes and its sha256."""

    path: str
    bytes_on_disk: int
    raw_bytes: int
    sha256: str


# ---------------------------------------------------------------- writing


def write_artifact(
    path: str | os.PathLike[str],
    tensors: dict[str, QTensor],
    *,
    quantizer_name: str,
    quantizer_config: dict,
    compressor: Compressor,
    compressor_name: str,
    compressor_config: dict,
    extras: dict | None = None,
) -> ArtifactInfo:
    """Write ``tensors`` to a new file at ``path`` (never replacing one) and describe it."""
    path = Path(path)
    _check_little_endian(path)
    if os.path.lexists(path):
        raise ArtifactError(f"{path}: refusing to overwrite an existing artifact")
    entries, chunks, raw_len = _layout(path, tensors)
    manifest = {
        "format": FORMAT_NAME,
        "quantizer": {"name": quantizer_name, "config": quantizer_config},
        "compressor": {"name": compressor_name, "config": compressor_config},
        "raw_bytes": raw_len,
        "tensors": entries,
        "extras": {} if extras is None else extras,
    }
    manifest_bytes = _encode_manifest(path, manifest)
    # What the reader will check, checked now: a bad name or config fails before any write.
    _validate_manifest(path, decode_manifest(path, manifest_bytes, FORMAT_VERSION), FORMAT_VERSION)
    payload = _compress(compressor, b"".join(chunks), entries)
    blob = b"".join(
        (
            _HEADER.pack(MAGIC, FORMAT_VERSION, len(manifest_bytes)),
            manifest_bytes,
            hashlib.sha256(payload).digest(),
            payload,
        )
    )
    _write_new_file(path, blob)
    return ArtifactInfo(
        path=str(path),
        bytes_on_disk=os.path.getsize(path),
        raw_bytes=raw_len,
        sha256=hashlib.sha256(blob).hexdigest(),
    )


def _layout(path: Path, tensors: Mapping[str, QTensor]) -> tuple[dict, list[bytes], int]:
    """Manifest entries and the raw byte chunks, in canonical order (`array_order`)."""
    entries: dict[str, Any] = {}
    for name in sorted(tensors, key=str):
        qt = tensors[name]
        if not isinstance(name, str) or not isinstance(qt, QTensor):
            raise ArtifactError(f"{path}: tensor {name!r} must be a str name mapped to a QTensor")
        entries[name] = {"kind": qt.kind, "meta": qt.meta, "arrays": dict.fromkeys(sorted(qt.arrays))}
    chunks: list[bytes] = []
    offset = 0
    for name, key in array_order(entries, FORMAT_VERSION):
        arr = tensors[name].arrays[key]
        data = _array_bytes(path, name, key, arr)
        entries[name]["arrays"][key] = {
            "dtype": dtype_name(arr.dtype),
            "shape": list(arr.shape),
            "offset": offset,
            "nbytes": len(data),
        }
        chunks.append(data)
        offset += len(data)
    return entries, chunks, offset


def _compress(compressor: Compressor, raw: bytes, entries: dict) -> bytes:
    """``compressor.compress(raw)``, plus the symbol layout for a `LayoutAwareCompressor`
    (an entropy coder codes int5 codes, not the bytes they are packed in). The payload still
    decodes to exactly ``raw``: the file format does not change."""
    if isinstance(compressor, LayoutAwareCompressor):
        # By name: a bundle whose compressor reads no layout carries none (harness.api.layout).
        layout = import_by_name(LAYOUT_MODULE).layout_from_manifest(entries)
        return compressor.compress(raw, layout=layout)
    return compressor.compress(raw)


def _array_bytes(path: Path, name: str, key: str, arr: object) -> bytes:
    """The array's bytes in host (little-endian) order; bf16 and bool go through a uint8 view."""
    if not isinstance(arr, torch.Tensor):
        raise ArtifactError(
            f"{path}: tensor {name} array {key!r} is a {type(arr).__name__}, not a torch.Tensor"
        )
    if dtype_name(arr.dtype) not in DTYPES:
        raise ArtifactError(
            f"{path}: tensor {name} array {key!r} has dtype {dtype_name(arr.dtype)}; "
            f"allowed: {', '.join(DTYPES)}"
        )
    return host_bytes(arr).tobytes()


def _encode_manifest(path: Path, manifest: dict) -> bytes:
    try:
        data = encode_manifest(manifest, FORMAT_VERSION)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(
            f"{path}: the manifest (configs, meta, extras) is not plain JSON: {exc}"
        ) from None
    if len(data) >= 2**32:
        raise ArtifactError(f"{path}: manifest of {len(data)} bytes does not fit the u32 length field")
    return data


def _write_new_file(path: Path, blob: bytes) -> None:
    """Write atomically and never over an existing file."""
    try:
        write_atomic(path, blob, overwrite=False)
    except FileExistsError:
        raise ArtifactError(f"{path}: refusing to overwrite an existing artifact") from None


# ---------------------------------------------------------------- reading


def read_manifest(path: str | os.PathLike[str]) -> dict:
    """The validated manifest of the artifact at ``path`` (reads the header and manifest only)."""
    path = Path(path)
    with _open(path) as f:
        return _read_head(path, f, os.fstat(f.fileno()).st_size)


def read_artifact(
    path: str | os.PathLike[str],
    *,
    compressor_for: Callable[[str, dict], Compressor],
    max_raw_bytes: int = MAX_RAW_BYTES,
) -> tuple[dict[str, QTensor], dict]:
    """Decode the artifact at ``path`` into (tensors, manifest), validating every field.

    ``compressor_for(name, config)`` builds the manifest's compressor. Decompression is
    bounded by the manifest's ``raw_bytes``, itself at most ``max_raw_bytes``.
    """
    path = Path(path)
    _check_little_endian(path)
    manifest, payload = _read_verified(path)
    raw_bytes = manifest["raw_bytes"]
    if raw_bytes > max_raw_bytes:
        raise ArtifactError(f"{path}: raw_bytes {raw_bytes} exceeds the limit max_raw_bytes={max_raw_bytes}")
    comp = manifest["compressor"]
    raw = _decompress(path, compressor_for(comp["name"], comp["config"]), payload, raw_bytes)
    tensors = {name: _decode_tensor(path, name, raw, entry) for name, entry in manifest["tensors"].items()}
    return tensors, manifest


def verify_payload(path: str | os.PathLike[str]) -> dict:
    """The validated manifest, after checking the payload against its stored sha256
    (no decompression: what `pgolf verify` needs to detect a changed payload byte)."""
    return _read_verified(Path(path))[0]


def _read_verified(path: Path) -> tuple[dict, bytes]:
    """(manifest, compressed payload) once the header, manifest and payload digest validate."""
    with _open(path) as f:
        manifest = _read_head(path, f, os.fstat(f.fileno()).st_size)
        digest = f.read(DIGEST_BYTES)
        payload = f.read()
    if len(digest) != DIGEST_BYTES:
        raise ArtifactError(f"{path}: file is truncated inside the payload digest")
    if hashlib.sha256(payload).digest() != digest:
        raise ArtifactError(f"{path}: payload sha256 mismatch (the file is corrupt or was modified)")
    return manifest, payload


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot open artifact: {exc.strerror}") from None


def _read_head(path: Path, f: BinaryIO, file_size: int) -> dict:
    """Parse and validate magic, version and manifest; leaves ``f`` at the digest."""
    head = f.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise ArtifactError(f"{path}: file is truncated ({file_size} bytes; the header needs {_HEADER.size})")
    magic, version, mlen = _HEADER.unpack(head)
    if magic != MAGIC:
        raise ArtifactError(f"{path}: is not a pgolf artifact (magic {magic!r}, expected {MAGIC!r})")
    if version not in FORMAT_NAMES:
        raise ArtifactError(
            f"{path}: format version {version} is not supported (expected one of {sorted(FORMAT_NAMES)})"
        )
    if _HEADER.size + mlen + DIGEST_BYTES > file_size:
        raise ArtifactError(
            f"{path}: file is truncated (manifest length {mlen} + digest do not fit in {file_size} bytes)"
        )
    manifest = decode_manifest(path, f.read(mlen), version)
    _validate_manifest(path, manifest, version)
    return manifest


def _decompress(path: Path, compressor: Compressor, payload: bytes, raw_bytes: int) -> bytes:
    try:
        raw = compressor.decompress(payload, max_output_size=raw_bytes)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: payload: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin codec's own failure on corrupt input
        raise ArtifactError(
            f"{path}: payload: compressor {type(compressor).__name__} failed on it "
            f"({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(raw, (bytes, bytearray)) or len(raw) > raw_bytes:
        raise ArtifactError(
            f"{path}: payload: compressor returned more than the declared raw_bytes {raw_bytes}"
        )
    if len(raw) != raw_bytes:
        raise ArtifactError(f"{path}: raw_bytes: manifest says {raw_bytes}, the payload holds {len(raw)}")
    return raw


def _decode_tensor(path: Path, name: str, raw: bytes, entry: dict) -> QTensor:
    arrays = {
        key: _decode_array(f"{path}: tensors.{name}.arrays.{key}", raw, spec)
        for key, spec in entry["arrays"].items()
    }
    return QTensor(kind=entry["kind"], arrays=arrays, meta=entry["meta"])


def _decode_array(where: str, raw: bytes, spec: dict) -> torch.Tensor:
    dtype = DTYPES[spec["dtype"]]
    if spec["nbytes"] == 0:  # numpy's empty buffers have stride 0, which torch cannot view
        return torch.empty(spec["shape"], dtype=dtype)
    # numpy copies into a fresh (aligned) buffer; torch then reinterprets the bytes.
    buf = np.frombuffer(raw, dtype=np.uint8, count=spec["nbytes"], offset=spec["offset"]).copy()
    if spec["dtype"] == "bool" and buf.size and int(buf.max()) > 1:
        # Any byte other than 0/1 is not a valid torch bool.
        raise ArtifactError(f"{where}: bool array holds bytes other than 0 and 1")
    return torch.from_numpy(buf).view(dtype).reshape(spec["shape"])


# ---------------------------------------------------------------- manifest validation


def _validate_manifest(path: Path, m: object, version: int) -> None:
    """Check every field a reader relies on (each error names the field); a version 2
    manifest gets its arrays' derived ``offset`` and ``nbytes`` filled in."""
    if not isinstance(m, dict) or set(m) != _MANIFEST_KEYS:
        got = sorted(m) if isinstance(m, dict) else type(m).__name__
        raise ArtifactError(f"{path}: manifest keys must be {sorted(_MANIFEST_KEYS)}, got {got}")
    if m["format"] != FORMAT_NAMES[version]:
        raise ArtifactError(
            f"{path}: manifest format: expected {FORMAT_NAMES[version]!r} (version {version}), "
            f"got {m['format']!r}"
        )
    for slot in ("quantizer", "compressor"):
        comp = m[slot]
        if (
            not isinstance(comp, dict)
            or set(comp) != {"name", "config"}
            or not isinstance(comp["name"], str)
            or not isinstance(comp["config"], dict)
        ):
            raise ArtifactError(
                f"{path}: manifest {slot}: expected {{'name': str, 'config': dict}}, got {comp!r}"
            )
    if not isinstance(m["extras"], dict):
        raise ArtifactError(f"{path}: manifest extras: expected an object, got {type(m['extras']).__name__}")
    raw_bytes = m["raw_bytes"]
    if not _is_count(raw_bytes):
        raise ArtifactError(f"{path}: manifest raw_bytes: expected an integer >= 0, got {raw_bytes!r}")
    if not isinstance(m["tensors"], dict):
        raise ArtifactError(
            f"{path}: manifest tensors: expected an object, got {type(m['tensors']).__name__}"
        )
    end = _validate_tensors(path, m["tensors"], version)
    if end != raw_bytes:
        raise ArtifactError(
            f"{path}: manifest raw_bytes: expected {end} (the sum of array sizes), got {raw_bytes}"
        )


def _validate_tensors(path: Path, tensors: dict, version: int) -> int:
    """Validate every tensor entry; arrays must tile the raw bytes in canonical order."""
    for name in sorted(tensors):
        entry = tensors[name]
        where = f"{path}: manifest tensors.{name}"
        if (
            not isinstance(entry, dict)
            or set(entry) != {"kind", "meta", "arrays"}
            or not isinstance(entry["kind"], str)
            or not isinstance(entry["meta"], dict)
            or not isinstance(entry["arrays"], dict)
        ):
            raise ArtifactError(f"{where}: expected {{'kind': str, 'meta': dict, 'arrays': dict}}")
    offset = 0
    for name, key in array_order(tensors, version):
        offset = _validate_array(
            f"{path}: manifest tensors.{name}.arrays.{key}", tensors[name]["arrays"][key], offset, version
        )
    return offset


def _validate_array(where: str, spec: object, offset: int, version: int) -> int:
    """Validate one array spec placed at ``offset``; returns the offset after it. Version 2
    stores no ``offset`` and ``nbytes``: they are filled in here, then checked like version 1's."""
    stored = {"dtype", "shape"} | (set() if version >= 2 else set(DERIVED_KEYS))
    if not isinstance(spec, dict) or set(spec) != stored:
        raise ArtifactError(f"{where}: expected keys {', '.join(sorted(stored))}; got {spec!r}")
    dtype = spec["dtype"]
    if dtype not in DTYPES:
        raise ArtifactError(f"{where}.dtype: {dtype!r} is not allowed (allowed: {', '.join(DTYPES)})")
    shape = spec["shape"]
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise ArtifactError(f"{where}.shape: expected a list of integers >= 0, got {shape!r}")
    # Zero-size arrays skip the raw_bytes bound, so their other dims are bounded here
    # (torch cannot even describe [0, 2**70]).
    if len(shape) > MAX_NDIM or math.prod(max(d, 1) for d in shape) > MAX_RAW_BYTES:
        raise ArtifactError(
            f"{where}.shape: {shape!r} exceeds the limits ({MAX_NDIM} dims, {MAX_RAW_BYTES} elements)"
        )
    if version >= 2:
        spec["offset"], spec["nbytes"] = offset, math.prod(shape) * DTYPES[dtype].itemsize
    if spec["offset"] != offset or not _is_count(spec["offset"]):
        raise ArtifactError(
            f"{where}.offset: expected {offset} (arrays are stored back to back in canonical order), "
            f"got {spec['offset']!r}"
        )
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    if spec["nbytes"] != nbytes or not _is_count(spec["nbytes"]):
        raise ArtifactError(
            f"{where}.nbytes: expected {nbytes} (shape {shape} x {dtype}), got {spec['nbytes']!r}"
        )
    return offset + nbytes


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# ---------------------------------------------------------------- re-scoring from the file alone


def load_state_dict(path: str | os.PathLike[str], registry: Registry) -> tuple[dict[str, torch.Tensor], dict]:
    """Rebuild the float state dict from the artifact file alone: (state_dict, manifest).

    The quantizer and compressor are rebuilt from the manifest's names and configs through
    ``registry``; this is how a run is re-scored without its training process.
    """
    path = Path(path)
    # One read of the file: the quantizer comes from the same manifest as the tensors.
    tensors, manifest = read_artifact(
        path, compressor_for=lambda name, cfg: _build(path, registry, "compressor", name, cfg)
    )
    spec = manifest["quantizer"]
    quantizer = _build(path, registry, "quantizer", spec["name"], spec["config"])
    try:
        state_dict = quantizer.dequantize(tensors)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin quantizer's own failure on odd tensors
        raise ArtifactError(
            f"{path}: quantizer {spec['name']!r} cannot decode these tensors ({type(exc).__name__}: {exc})"
        ) from None
    return state_dict, manifest


def _build(path: Path, registry: Registry, kind: str, name: str, config: dict) -> Any:
    """``registry.get(kind, name).config_cls(**config).build()``, JSON lists back to tuples."""
    try:
        return config_from_json(registry.get(kind, name).config_cls, config, registry).build()
    except PgolfError as exc:
        raise ArtifactError(f"{path}: manifest {kind} {name!r}: {exc}") from None


def _tuple_fields(cls: type) -> set[str]:
    # JSON has no tuples: a list goes back to a tuple where the field's default is a tuple
    # (or its annotation says tuple), so frozen Configs compare and hash as when written.
    return {
        f.name
        for f in dataclasses.fields(cls)
        if isinstance(f.default, tuple) or str(f.type).startswith(("tuple", "Tuple"))
    }


def _from_json(value: Any, registry: Registry | None) -> Any:
    """Nested Configs come back only as classes the registry knows: a manifest can never
    name arbitrary code to import."""
    if isinstance(value, dict) and CLASS_KEY in value:
        path = value[CLASS_KEY]
        comp = registry.by_class_path(path) if registry is not None else None
        if comp is None:
            raise ArtifactError(f"manifest names component class {path!r}, which is not a registered plugin")
        return config_from_json(comp.config_cls, {k: v for k, v in value.items() if k != CLASS_KEY}, registry)
    if isinstance(value, list):
        return [_from_json(v, registry) for v in value]
    return value


def config_from_json(cls: type, config: dict, registry: Registry | None = None) -> Any:
    """Instantiate Config ``cls`` from ``config_to_json`` output; a mismatch is an ArtifactError.

    Nested component Configs (``{"_class": ...}``) are resolved through ``registry``.
    """
    tuples = _tuple_fields(cls)
    kwargs = {}
    for key, raw in config.items():
        value = _from_json(raw, registry)
        kwargs[key] = tuple(value) if key in tuples and isinstance(value, list) else value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ArtifactError(f"manifest config does not fit {cls.__name__}: {exc}") from None


CLASS_KEY = "_class"


def class_path(cls: type) -> str:
    """``module.QualName`` of a Config class, the tag nested Configs carry in JSON."""
    return f"{cls.__module__}.{cls.__qualname__}"


def config_to_json(cfg: object) -> dict:
    """A Config dataclass as a JSON-ready dict (tuples become lists; nested Configs become
    dicts tagged with their class path, resolved on load through the registry)."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise ArtifactError(f"config_to_json needs a dataclass instance, got {type(cfg).__name__}")
    return {f.name: _to_json(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _to_json(value: object) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {CLASS_KEY: class_path(type(value)), **config_to_json(value)}
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- helpers


def _check_little_endian(path: Path) -> None:
    # Arrays are written and read as host-order bytes; the format fixes them little-endian.
    if sys.byteorder != "little":
        raise ArtifactError(
            f"{path}: the artifact format needs a little-endian host, this one is {sys.byteorder}"
        )
