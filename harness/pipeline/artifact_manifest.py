"""How the artifact container stores its manifest and orders its arrays, per format version.

Version 1 stored the manifest as plain JSON and the arrays in name order, each tensor's codes
next to its scales. Measured on the baseline's shape (9 layers x 512, vocab 1024, int8 per row
+ zlib-9; ``benchmarks/container_vs_upstream.py``), that file was larger than upstream's
``torch.save`` + zlib-9 of the same codes: the 19 kB manifest was stored uncompressed, and
interleaving 1-byte codes with 2-byte fp16 scales cost the compressor about 30 kB. Version 2:

* arrays are grouped by role, the way upstream's export dict groups them (all ``quantized``
  codes, then all ``scales``, then ``passthrough``): codes of quantized tensors first, then
  their scales, then every other array; by tensor name, then array key, within a role. Of the
  six orders measured there (``benchmarks/container_vs_upstream.txt``), this one is within
  0.05 % of the best for zlib-9 and zstd-22 and 0.8 % behind the best for lzma-9 (grouping by
  dtype, fp16 first, which costs zstd-22 9 %): no order was best for all three;
* the manifest drops each array's ``offset`` and ``nbytes`` (both follow from the order, the
  dtypes and the shapes) and is zlib-9 compressed (about 20x smaller). Its decompression is
  bounded by `MAX_MANIFEST_BYTES`. Readers get the offsets and sizes back, filled in, so a
  version 2 manifest in memory looks like a version 1 manifest.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from pathlib import Path

from harness.api.errors import ArtifactError
from harness.api.tensor_classes import tensor_class
from harness.api.zlib_stream import inflate_bounded

FORMAT_NAMES: dict[int, str] = {1: "pgolf-artifact/1", 2: "pgolf-artifact/2"}
"""Format versions a reader accepts, with the manifest ``format`` each one must carry."""
WRITTEN_VERSION = 2
"""The version `write_artifact` writes."""
MAX_MANIFEST_BYTES = 64 * 2**20
"""Most bytes a version 2 manifest may inflate to (a real one is tens of kB)."""
DERIVED_KEYS = ("offset", "nbytes")
"""Array fields that version 2 does not store: the reader derives them from the order."""

_CODES, _SCALES, _OTHER = 0, 1, 2


def _role(name: str, kind: str, key: str) -> int:
    cls = tensor_class(name, kind, key)
    return _SCALES if cls == "scales" else _OTHER if cls == "float" else _CODES


def array_order(tensors: Mapping[str, Mapping], version: int) -> list[tuple[str, str]]:
    """(tensor name, array key) in the order the arrays sit in the raw payload.

    ``tensors`` maps names to objects with ``kind`` and ``arrays`` (manifest entries); the
    caller has checked their types."""
    pairs = [(name, key) for name in sorted(tensors) for key in sorted(tensors[name]["arrays"])]
    if version == 1:
        return pairs
    return sorted(pairs, key=lambda p: (_role(p[0], tensors[p[0]]["kind"], p[1]), p[0], p[1]))


def encode_manifest(manifest: dict, version: int = WRITTEN_VERSION) -> bytes:
    """The manifest's bytes as stored in a file of ``version``; TypeError / ValueError when it
    is not plain JSON."""
    if version == 2:
        manifest = {**manifest, "tensors": _without_derived(manifest["tensors"])}
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return zlib.compress(text, 9) if version == 2 else text


def _without_derived(tensors: dict) -> dict:
    return {
        name: {
            **entry,
            "arrays": {
                key: {k: v for k, v in spec.items() if k not in DERIVED_KEYS}
                for key, spec in entry["arrays"].items()
            },
        }
        for name, entry in tensors.items()
    }


def decode_manifest(path: Path, data: bytes, version: int) -> object:
    """The JSON value stored as ``data`` in a file of ``version`` (not yet validated)."""
    if version == 2:
        data = inflate_bounded(data, MAX_MANIFEST_BYTES, f"{path}: manifest")
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ArtifactError(f"{path}: manifest JSON is nested too deeply") from None
    except ValueError as exc:  # bad UTF-8, bad JSON, or an integer literal over Python's digit limit
        raise ArtifactError(f"{path}: manifest is not valid UTF-8 JSON: {exc}") from None
