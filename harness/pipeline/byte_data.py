"""The byte-level data path of a run: the byte variant of the built-in default dataset as a run
finds it (its cache folder, whether a prepared copy is whole, the copy), and the byte tables of
a byte tokenizer spec (`harness.pipeline.byte_spec`: vocabulary 256, one id per UTF-8 byte).

A module of its own, imported by name only, because only runs on byte-level data reach it (the
byte_gpt and conv_moe submissions): `harness.pipeline.prepared_data.find_prepared` comes here
for ``data.default_variant="bytes"`` and `harness.pipeline.bpb.build_byte_luts` for a tokenizer
file that is a byte spec. The bundles of a run whose data is byte-level embed it
(`harness.api.by_name.modules_reached_by_name`); a token-model submission ships none of these
bytes (pgolf issue 13).

A prepared byte folder is whole when its ``manifest.json`` parses, names this build version, the
byte build version and the sp1024 tokenizer it was converted from, binds its tokenizer
(``tokenizer_sha256``) and lists only present files of the recorded sizes. The tables are the
trivial ones of `harness.pipeline.bpb`'s docstring: every id counts 1 byte, no leading-space
flag, no boundary.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.api.errors import DataError
from harness.pipeline.bpb import ByteLUTs
from harness.pipeline.byte_spec import BYTE_VOCAB, SPEC_NAME, read_byte_tokenizer_spec
from harness.pipeline.prepared_data import BUILD_VERSION, DefaultDataset, default_dataset_dir

BYTES_BUILD_VERSION = 1
"""Bump when the byte conversion changes, so old byte caches are not reused."""


def default_bytes_dataset_dir() -> Path:
    """Cache folder of the byte variant: a sibling named after the sp1024 folder it is made from."""
    sp_dir = default_dataset_dir()
    return sp_dir.with_name(f"{sp_dir.name}_bytes_v{BYTES_BUILD_VERSION}")


def load_prepared_bytes(folder: Path) -> DefaultDataset:
    """The DefaultDataset of a whole byte-variant folder (tokenizer = the byte spec)."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return DefaultDataset(data_path=folder, tokenizer_path=folder / SPEC_NAME, manifest=manifest)


def is_bytes_complete(folder: Path, source: DefaultDataset) -> bool:
    """True when the byte folder is whole, of this recipe, and made from ``source``'s tokenizer."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        sizes = manifest["file_bytes"]
        if (
            manifest.get("variant") != "bytes"
            or manifest.get("build_version") != BUILD_VERSION
            or manifest.get("bytes_build_version") != BYTES_BUILD_VERSION
            or manifest["source"]["tokenizer_sha256"] != source.manifest["sha256"]["tokenizer.model"]
            or SPEC_NAME not in sizes
            or "tokenizer_sha256" not in manifest
        ):
            return False
        return all((folder / name).stat().st_size == size for name, size in sizes.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def find_prepared_bytes(source: DefaultDataset) -> DefaultDataset | None:
    """The prepared byte variant converted from the whole sp1024 copy ``source``, or None when
    the cache holds no whole copy of it."""
    dest = default_bytes_dataset_dir()
    return load_prepared_bytes(dest) if is_bytes_complete(dest, source) else None


def byte_spec_luts(tokenizer_path: str | Path, vocab_size: int) -> ByteLUTs:
    """Tables of the byte tokenizer spec at ``tokenizer_path``: 1 byte per id, no spaces, no
    boundaries. DataError naming the file when the spec is malformed or ``vocab_size`` is not 256."""
    read_byte_tokenizer_spec(tokenizer_path)
    if vocab_size != BYTE_VOCAB:
        raise DataError(
            f"tokenizer file {str(tokenizer_path)!r} is a byte tokenizer with vocab size {BYTE_VOCAB}, "
            f"but the model's vocab_size is {vocab_size}; they must be equal"
        )
    return ByteLUTs(
        base_bytes=torch.ones(BYTE_VOCAB, dtype=torch.int32),
        has_leading_space=torch.zeros(BYTE_VOCAB, dtype=torch.bool),
        is_boundary=torch.zeros(BYTE_VOCAB, dtype=torch.bool),
        vocab_size=BYTE_VOCAB,
    )
