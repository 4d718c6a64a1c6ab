"""Data and tokenizer bound together: refuse, before training, a tokenizer that did not make the shards.

BPB divides by the bytes the tokenizer's byte tables give each token id (`harness.pipeline.bpb`),
so scoring shards with another tokenizer of the same vocabulary size silently changes the
denominator: the official sp1024 model read over the built-in sp1024 shards counts 9.1 % more
bytes than the text holds (a smoke run scored 3.546 where the right tokenizer scores 3.818;
pgolf issue 11). Two checks, in this order:

* **Manifest** (`manifest.json` beside the shards, written by `harness.datasets`): it records
  ``tokenizer_sha256`` and ``vocab_size``; a run whose tokenizer file or ``data.vocab_size``
  differs is refused. This check is exact.
* **Sample** (data without such a manifest, e.g. upstream's downloads made by another tool):
  the validation shards must use ids in the upper half of the vocabulary (a SentencePiece BPE
  model puts its single characters at the top ids, so real shards always reach there; sp1024
  shards read as vocab 8192 never do), and a sample of the first shard, cut into documents at
  BOS and decoded, must not be ``<unk>``-heavy, must not decode to invalid UTF-8 (byte pieces
  that the true tokenizer never emits in that order) and must re-encode to the same ids
  (SentencePiece encoding is deterministic, so text decoded from its own output encodes back
  to it; a wrong tokenizer's text does not: 7-32 % of tokens differ in our measurements, 0 %
  for the right one, plus the few tokens around each ``<unk>``).

A byte tokenizer spec (`harness.pipeline.byte_spec`) has no decoder to test, so only its
manifest is checked. docs/protocol.md §1.8 states the rule; docs/formats.md lists the fields.
"""

from __future__ import annotations

import difflib
import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import sentencepiece as spm

from harness.api.errors import DataError
from harness.pipeline.byte_spec import is_byte_tokenizer
from harness.pipeline.shards import list_shards, read_shard

MANIFEST_NAME = "manifest.json"
SAMPLE_TOKENS = 32768
"""Validation tokens decoded by the sample check (about 0.2 s on one CPU core)."""
MAX_UNK_RATE = 0.02
MAX_INVALID_UTF8_RATE = 0.01
MAX_MISMATCH_RATE = 0.03
"""Re-encoding mismatches allowed beyond ``UNK_MISMATCH`` tokens per ``<unk>``."""
UNK_MISMATCH = 2.0


def read_binding(data_path: str | Path) -> tuple[str, int] | None:
    """(tokenizer_sha256, vocab_size) recorded by the dataset's manifest, or None without one."""
    path = Path(data_path) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"dataset manifest {path} cannot be read as JSON: {exc}") from None
    if not isinstance(manifest, dict) or "tokenizer_sha256" not in manifest:
        return None  # a manifest from elsewhere that binds no tokenizer
    sha, vocab = manifest.get("tokenizer_sha256"), manifest.get("vocab_size")
    if not isinstance(sha, str) or len(sha) != 64 or type(vocab) is not int:
        raise DataError(
            f"dataset manifest {path}: expected tokenizer_sha256 (64 hex digits) and vocab_size "
            f"(an integer), got {sha!r} and {vocab!r}"
        )
    return sha.lower(), vocab


def _check_manifest(data_path: Path, binding: tuple[str, int], tokenizer: Path, sha: str, vocab: int) -> None:
    want_sha, want_vocab = binding
    where = f"dataset {data_path} (manifest.json)"
    if vocab != want_vocab:
        raise DataError(
            f"{where} was tokenized with vocabulary {want_vocab}, but data.vocab_size is {vocab}; "
            "train on shards made by the tokenizer you score with"
        )
    if sha != want_sha:
        raise DataError(
            f"{where} was tokenized by a tokenizer with sha256 {want_sha}, but data.tokenizer_path "
            f"{tokenizer} has sha256 {sha}: another tokenizer's byte tables would miscount BPB"
        )


def _max_id(shards: list[Path]) -> int:
    return max((int(np.max(t)) for t in map(read_shard, shards) if t.size), default=-1)


def _documents(tokens: np.ndarray, sp: spm.SentencePieceProcessor, cut: bool) -> list[list[int]]:
    """Id lists of the documents in ``tokens`` (split at BOS, control ids dropped); the last one
    goes when the sample cut it short and others remain."""
    bos = sp.bos_id()
    starts = np.flatnonzero(tokens == bos).tolist() if bos >= 0 else []
    bounds = sorted({0, *starts, tokens.size})
    docs = [[t for t in tokens[a:b].tolist() if not sp.is_control(t)] for a, b in pairwise(bounds)]
    docs = [d for d in docs if d]
    return docs[:-1] if cut and len(docs) > 1 else docs


def sample_stats(tokens: np.ndarray, sp: spm.SentencePieceProcessor, cut: bool = False) -> dict[str, float]:
    """Rates of ``<unk>`` ids, invalid-UTF-8 characters (U+FFFD) in the decoded text, and ids
    that differ after decoding and re-encoding each document."""
    docs = _documents(np.asarray(tokens, dtype=np.int64), sp, cut)
    total = sum(map(len, docs)) or 1
    unk = sum(t == sp.unk_id() for d in docs for t in d)
    texts = sp.decode(docs)
    chars = sum(map(len, texts)) or 1
    matched = 0
    for ids, again in zip(docs, sp.encode(texts, out_type=int), strict=True):
        blocks = difflib.SequenceMatcher(None, ids, again, autojunk=False).get_matching_blocks()
        matched += sum(b.size for b in blocks)
    return {
        "tokens": total,
        "unk": unk / total,
        "invalid_utf8": sum(t.count("\ufffd") for t in texts) / chars,
        "mismatch": 1.0 - matched / total,
    }


def _check_sample(data_path: Path, tokenizer: Path, vocab: int) -> str:
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    shards = list_shards(data_path, "val")
    where = f"validation shards of {data_path} read with tokenizer {tokenizer}"
    top = _max_id(shards)
    if top < vocab // 2:
        raise DataError(
            f"{where}: the largest token id is {top}, below half of vocab_size {vocab}; these shards "
            "were made by a smaller vocabulary (data.vocab_size and the tokenizer must be the shards' own)"
        )
    first = read_shard(shards[0])
    stats = sample_stats(first[:SAMPLE_TOKENS], sp, cut=first.size > SAMPLE_TOKENS)
    summary = " ".join(f"{k}:{v:.4f}" if k != "tokens" else f"{k}:{v}" for k, v in stats.items())
    if stats["unk"] > MAX_UNK_RATE:
        problem = f"<unk>-heavy ({stats['unk']:.2%} of ids > {MAX_UNK_RATE:.0%})"
    elif stats["invalid_utf8"] > MAX_INVALID_UTF8_RATE:
        problem = (
            f"the decoded text is {stats['invalid_utf8']:.2%} invalid UTF-8 (> {MAX_INVALID_UTF8_RATE:.0%})"
        )
    elif stats["mismatch"] > MAX_MISMATCH_RATE + UNK_MISMATCH * stats["unk"]:
        problem = (
            f"{stats['mismatch']:.2%} of ids change when the decoded text is encoded again "
            f"(allowed {MAX_MISMATCH_RATE:.0%} + {UNK_MISMATCH:g} per <unk>)"
        )
    else:
        return f"binding:sample max_id:{top} {summary}"
    raise DataError(
        f"{where}: {problem}; this tokenizer did not make these shards, so its byte tables would "
        f"miscount BPB ({summary})"
    )


def check_data_binding(
    data_path: str | Path, tokenizer_path: str | Path, tokenizer_sha: str, vocab: int
) -> str:
    """Refuse a tokenizer or vocab_size the shards were not made with; return a log summary."""
    data_path, tokenizer_path = Path(data_path), Path(tokenizer_path)
    binding = read_binding(data_path)
    if binding is not None:
        _check_manifest(data_path, binding, tokenizer_path, tokenizer_sha.lower(), vocab)
        return "binding:manifest"
    if is_byte_tokenizer(tokenizer_path):
        return "binding:none (byte tokenizer, no manifest)"
    return _check_sample(data_path, tokenizer_path, vocab)
