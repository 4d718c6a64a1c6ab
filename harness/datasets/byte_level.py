"""Byte-level datasets: the byte variant of any SentencePiece dataset, and the byte tokenizer spec.

A byte dataset stores the UTF-8 bytes of the text as tokens 0..255 in the ordinary shard
format (`harness.pipeline.shards`, docs/protocol.md §1.1), so byte-level models (ByteGPT and
CLMConvMoE, docs/techniques.md §11) train and are scored by the same loaders and the same BPB
code as every other run. It is made from an exported token dataset by decoding it back to
text with its own tokenizer: the upstream export (`data/download_hf_docs_and_tokenize.py`,
docs/protocol.md §1.5) prefixes every document with BOS (id 1) and appends no EOS, so the
token stream is cut into documents at BOS, each document is decoded with SentencePiece and
its text is written as UTF-8 bytes.

Where this deliberately differs from upstream's own byte export (`byte260`, docs/protocol.md
§2.3: byte + 4, with pad/BOS/EOS/UNK ids, vocabulary 260):

* the vocabulary is exactly 256 and token = byte; there is no BOS, so documents are
  concatenated with no separator (a model sees one long byte stream, as the dancinlab
  ByteGPT trainer does with its raw corpus file);
* the text is what the token shards encode, i.e. SentencePiece's *normalized* text
  (``nmt_nfkc``, collapsed whitespace), not the raw documents: it is the text the
  SentencePiece BPB denominator counts, so the two scores divide by the same bytes;
* decoding is lossless only with byte fallback. A tokenizer without it (the official
  sp1024 has no byte pieces) maps rare characters to ``<unk>``, which decodes to " ⁇ ":
  such pieces are counted, the manifest says ``lossless: false`` and a warning is shown.

The manifest also records, per split, the source's byte count under the SentencePiece
byte tables of `harness.pipeline.bpb` (``source_lut_bytes``). For a lossless conversion it equals
the byte count written (checked, and warned about if not): that equality is what makes a
byte model's BPB comparable with a token model's.

The spec file ``tokenizer.json`` ({"format": "pgolf-bytes/1", "kind": "bytes",
"vocab_size": 256}) stands where a ``.model`` file stands for SentencePiece data, so
``data.tokenizer_path`` always names one file and `harness.pipeline.bpb.build_byte_luts` can
tell the two apart.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
from tqdm import tqdm

from harness.api.errors import ConfigError, DataError
from harness.api.fileio import write_atomic
from harness.pipeline.byte_spec import (  # noqa: F401  (re-exported for the converters' users)
    BYTE_TOKENIZER_SPEC,
    BYTE_VOCAB,
    SPEC_FORMAT,
    SPEC_NAME,
    is_byte_tokenizer,
    read_byte_tokenizer_spec,
    write_byte_tokenizer_spec,
)
from harness.pipeline.shards import (
    check_token_range,
    dataset_fingerprint,
    file_sha256,
    list_shards,
    read_shard,
    read_shard_header,
    write_shard,
)

SHARD_TOKENS = 100_000_000
"""Upstream's export shard size (docs/protocol.md §1.2)."""
BOS_ID = 1
DECODE_BATCH_TOKENS = 1 << 20
"""Source tokens handed to one batched SentencePiece decode (bounds memory on 100M-token shards)."""


class LossyDecodeWarning(UserWarning):
    """The source tokenizer turned some text into ``<unk>``, so the byte text is not the original."""


def _load_source_tokenizer(path: Path) -> spm.SentencePieceProcessor:
    if not path.is_file():
        raise DataError(f"tokenizer file {str(path)!r} does not exist or is not a file")
    if is_byte_tokenizer(path):
        raise DataError(
            f"tokenizer file {str(path)!r} is already a byte tokenizer; convert a SentencePiece dataset"
        )
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as exc:
        raise DataError(f"tokenizer file {str(path)!r} is not a readable SentencePiece model: {exc}") from exc


def _check_dest(source: Path, dest: Path) -> None:
    """Refuse a non-empty destination: stale shards there would be globbed into the new split."""
    if dest.exists() and source.exists() and dest.resolve() == source.resolve():
        raise ConfigError(f"dest {dest} is the source data folder; write the byte variant to a new folder")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError(
            f"dest {dest} exists and is not an empty folder; convert into a new or empty folder"
        )


def _documents(files: list[Path], vocab_size: int) -> Iterator[np.ndarray]:
    """Each document's ids (without its BOS), over the split's shards in order.

    Documents may straddle shards (upstream packs them back to back), so an open document
    is carried over. Tokens before the split's first BOS form one headless document.
    """
    carry: list[np.ndarray] | None = None
    for path in files:
        tokens = np.asarray(read_shard(path))
        check_token_range(tokens, vocab_size, path)
        bos = np.flatnonzero(tokens == BOS_ID)
        head = tokens[: bos[0]] if bos.size else tokens
        if carry is not None:
            carry.append(head)
        elif head.size:
            carry = [head]
        if not bos.size:
            continue
        if carry is not None:
            yield np.concatenate(carry)
        for start, end in zip(bos[:-1] + 1, bos[1:], strict=True):
            yield tokens[start:end]
        carry = [tokens[bos[-1] + 1 :]]
    if carry is not None:
        yield np.concatenate(carry)


class _ShardWriter:
    """Buffers byte tokens of one split and writes full ``fineweb_{split}_NNNNNN.bin`` shards."""

    def __init__(self, dest: Path, split: str, shard_tokens: int) -> None:
        self.dest, self.split, self.shard_tokens = dest, split, shard_tokens
        self.parts: list[np.ndarray] = []
        self.pending = 0
        self.names: list[str] = []
        self.total = 0

    def add(self, data: bytes) -> None:
        self.parts.append(np.frombuffer(data, dtype=np.uint8))
        self.pending += len(data)
        self.total += len(data)
        while self.pending >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def _flush(self, count: int) -> None:
        joined = np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.uint8)
        name = f"fineweb_{self.split}_{len(self.names):06d}.bin"
        write_shard(self.dest / name, joined[:count].astype(np.uint16), vocab_size=BYTE_VOCAB)
        self.names.append(name)
        rest = joined[count:]
        self.parts = [rest] if rest.size else []
        self.pending = int(rest.size)

    def close(self) -> list[str]:
        """Write the remainder (one empty shard if the split had no bytes at all); return the names."""
        if self.pending or not self.names:
            self._flush(self.pending)
        return self.names


def _lut_tables(tokenizer_path: Path, vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base bytes, leading space, boundary) of the source tokenizer, as numpy arrays."""
    # Imported here: harness.pipeline.bpb imports this module (to recognize byte specs) at its top.
    from harness.pipeline.bpb import build_byte_luts

    luts = build_byte_luts(tokenizer_path, vocab_size)
    return (
        luts.base_bytes.numpy().astype(np.int64),
        luts.has_leading_space.numpy(),
        luts.is_boundary.numpy(),
    )


def _decode_split(sp: spm.SentencePieceProcessor, files: list[Path], writer: _ShardWriter, bar: tqdm) -> int:
    """Decode one split's documents into ``writer`` in batches; return the number of documents."""
    docs, batch, batch_tokens = 0, [], 0
    for doc in _documents(files, int(sp.vocab_size())):
        docs += 1
        batch.append(doc.tolist())
        batch_tokens += doc.size + 1  # + its BOS, so progress follows the source tokens
        if batch_tokens >= DECODE_BATCH_TOKENS:
            writer.add("".join(sp.decode(batch)).encode("utf-8"))
            bar.update(batch_tokens)
            batch, batch_tokens = [], 0
    if batch:
        writer.add("".join(sp.decode(batch)).encode("utf-8"))
    bar.update(max(0, bar.total - bar.n))
    return docs


def _source_counts(sp: spm.SentencePieceProcessor, tables: tuple, files: list[Path]) -> dict[str, int]:
    """<unk> pieces of a split, and its bytes under the SentencePiece byte tables (the BPB denominator)."""
    unknown_ids = np.array([i for i in range(sp.vocab_size()) if sp.is_unknown(i)], dtype=np.int64)
    base, space, boundary = tables
    counts = {"unknown": 0, "lut_bytes": 0}
    prev_last = BOS_ID  # the split's first token follows nothing: count it as after a boundary
    for path in files:
        tokens = np.asarray(read_shard(path)).astype(np.int64)
        if not tokens.size:
            continue
        prev = np.concatenate(([prev_last], tokens[:-1]))
        counts["lut_bytes"] += int((base[tokens] + (space[tokens] & ~boundary[prev])).sum())
        counts["unknown"] += int(np.isin(tokens, unknown_ids).sum())
        prev_last = int(tokens[-1])
    return counts


def _warn_if_lossy(tokenizer_path: Path, splits: dict[str, dict[str, Any]]) -> bool:
    """Warn about ``<unk>`` pieces or a byte count that disagrees with the LUTs; True when lossless."""
    unknown = sum(s["unknown"] for s in splits.values())
    if unknown:
        warnings.warn(
            f"byte conversion with tokenizer {str(tokenizer_path)!r} is lossy: {unknown} <unk> pieces "
            "(characters the tokenizer cannot represent: it has no byte fallback) were decoded as ' ⁇ '",
            LossyDecodeWarning,
            stacklevel=3,
        )
        return False
    mismatched = {k: (s["bytes"], s["lut_bytes"]) for k, s in splits.items() if s["bytes"] != s["lut_bytes"]}
    if mismatched:
        warnings.warn(
            f"byte conversion with tokenizer {str(tokenizer_path)!r}: bytes written differ from the "
            f"SentencePiece byte tables' count, per split (written, tables): {mismatched}",
            LossyDecodeWarning,
            stacklevel=3,
        )
        return False
    return True


def convert_to_bytes(
    data_path: str | Path,
    tokenizer_path: str | Path,
    dest: str | Path,
    *,
    progress: bool = True,
    shard_tokens: int = SHARD_TOKENS,
) -> Path:
    """Write the byte variant of the SentencePiece dataset at ``data_path`` into ``dest``; return ``dest``.

    ``dest`` must be new or empty. It receives ``fineweb_{val,train}_NNNNNN.bin`` shards of
    at most ``shard_tokens`` byte tokens (the splits never share a shard), ``tokenizer.json``
    and, last, ``manifest.json`` (a folder without it is an unfinished conversion).
    """
    source, dest, tok = Path(data_path), Path(dest), Path(tokenizer_path)
    if isinstance(shard_tokens, bool) or not isinstance(shard_tokens, int) or shard_tokens < 1:
        raise ConfigError(f"shard_tokens must be a positive integer, got {shard_tokens!r}")
    _check_dest(source, dest)
    sp = _load_source_tokenizer(tok)
    files = {split: list_shards(source, split) for split in ("val", "train")}
    tables = _lut_tables(tok, int(sp.vocab_size()))
    dest.mkdir(parents=True, exist_ok=True)
    write_byte_tokenizer_spec(dest / SPEC_NAME)
    splits: dict[str, dict[str, Any]] = {}
    for split, shards in files.items():
        writer = _ShardWriter(dest, split, shard_tokens)
        total = sum(read_shard_header(p) for p in shards)
        bar = tqdm(
            total=total,
            desc=f"byte variant: {split}",
            unit="tok",
            unit_scale=True,
            file=sys.stderr,
            disable=not progress,
        )
        with bar:
            docs = _decode_split(sp, shards, writer, bar)
        names = writer.close()
        splits[split] = {
            "docs": docs,
            "bytes": writer.total,
            "files": names,
            **_source_counts(sp, tables, shards),
        }
    lossless = _warn_if_lossy(tok, splits)
    manifest = _manifest(source, tok, sp, files, dest, splits)
    manifest.update(lossless=lossless, shard_size=shard_tokens)
    write_atomic(
        dest / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
    )
    return dest


def _manifest(
    source: Path,
    tok: Path,
    sp: spm.SentencePieceProcessor,
    files: dict[str, list[Path]],
    dest: Path,
    splits: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Provenance and per-split counts of a conversion; every shard is hashed (docs/pitfalls.md §1)."""
    vocab = int(sp.vocab_size())
    own = [SPEC_NAME] + [name for split in splits.values() for name in split["files"]]
    return {
        **BYTE_TOKENIZER_SPEC,
        "tokenizer": SPEC_NAME,
        "tokenizer_sha256": file_sha256(dest / SPEC_NAME),  # with vocab_size: binds the shards
        "document_separator": None,
        "source": {
            "data_path": str(source),
            "tokenizer_path": str(tok),
            "tokenizer_sha256": file_sha256(tok),
            "vocab_size": vocab,
            "bos_id": BOS_ID,
            "byte_fallback": any(sp.is_byte(i) for i in range(vocab)),
            "files": {k: [p.name for p in f] for k, f in files.items()},
            "fingerprint": {k: dataset_fingerprint(f) for k, f in files.items()},
        },
        "num_docs": {k: s["docs"] for k, s in splits.items()},
        "num_bytes": {k: s["bytes"] for k, s in splits.items()},
        "source_lut_bytes": {k: s["lut_bytes"] for k, s in splits.items()},
        "unknown_pieces": {k: s["unknown"] for k, s in splits.items()},
        "unknown_total": sum(s["unknown"] for s in splits.values()),
        "files": {k: s["files"] for k, s in splits.items()},
        "fingerprint": {k: dataset_fingerprint(dest / n for n in s["files"]) for k, s in splits.items()},
        "sha256": {n: file_sha256(dest / n) for n in own},
        "file_bytes": {n: (dest / n).stat().st_size for n in own},
    }
