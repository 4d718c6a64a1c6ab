"""Tokenizer-agnostic byte accounting for bits-per-byte: per-token byte tables and counts.

BPB divides the summed cross-entropy by the UTF-8 byte length of the scored text, so every
tokenizer needs a way to turn (previous token, target token) into a byte count. The rule is
the one of upstream parameter-golf `train_gpt.py` (`build_sentencepiece_luts` and the
evaluation loop; see docs/protocol.md §2.2):

* control / unknown / unused pieces (BOS, EOS, PAD, UNK) count 0 bytes and are boundaries;
* byte-fallback pieces ``<0xNN>`` count 1 byte;
* other pieces count the UTF-8 length of their text without a leading U+2581 marker, plus
  one space byte when they carry that marker and the previous token is not a boundary.

A SentencePiece model must hold U+2581 as a piece of its own, as upstream records since
PR #1218 (Vocab4096) assert: without it a lone space is spelled as the byte pieces of
U+2581's three UTF-8 bytes, 3 counted bytes for 1 real one (upstream issue #897).

The space byte is added exactly once, in `count_bytes`, never in the table: adding it in both
places is the "double space byte" bug of PRs #1545/#1576/#1632/#1672 (docs/pitfalls.md §4.3).

A byte tokenizer spec (`harness.pipeline.byte_spec`, vocabulary 256, token = UTF-8 byte) has the
trivial tables: every id is 1 byte, with no leading-space flag and no boundary, so BPB is
the cross-entropy in bits with every byte counted once. Unlike upstream's byte260 LUT
(docs/protocol.md §2.3) there are no special ids to count as 0 bytes. Those tables are built
by `harness.pipeline.byte_data`, imported by name: only byte-level runs ship it.

Scoring belongs to the harness alone; nothing here is pluggable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm
import torch

from harness.api.by_name import BYTE_DATA_MODULE, import_by_name
from harness.api.errors import DataError
from harness.pipeline.byte_spec import looks_like_byte_spec

SPACE_MARKER = "\u2581"  # SentencePiece's visible stand-in for a leading space


@dataclass(frozen=True, eq=False)
class ByteLUTs:
    """Per-token byte tables indexed by token id (eq=False: tensors have no single truth value)."""

    base_bytes: torch.Tensor
    """int32 [V]: UTF-8 bytes of the piece, without its leading-space marker."""
    has_leading_space: torch.Tensor
    """bool [V]: the piece starts with U+2581, i.e. stands for a space before its text."""
    is_boundary: torch.Tensor
    """bool [V]: control/unknown/unused pieces; a space after one of them is not counted."""
    vocab_size: int
    """V, the length of every table."""

    def __post_init__(self) -> None:
        expected = (
            ("base_bytes", self.base_bytes, torch.int32),
            ("has_leading_space", self.has_leading_space, torch.bool),
            ("is_boundary", self.is_boundary, torch.bool),
        )
        for name, table, dtype in expected:
            if table.dtype != dtype or tuple(table.shape) != (self.vocab_size,):
                raise DataError(
                    f"ByteLUTs.{name}: expected a {dtype} tensor of shape ({self.vocab_size},), "
                    f"got {table.dtype} of shape {tuple(table.shape)}"
                )

    def to(self, device: torch.device | str) -> ByteLUTs:
        """A copy of the tables on ``device``."""
        return ByteLUTs(
            base_bytes=self.base_bytes.to(device),
            has_leading_space=self.has_leading_space.to(device),
            is_boundary=self.is_boundary.to(device),
            vocab_size=self.vocab_size,
        )


def _load_sentencepiece(tokenizer_path: str | Path) -> spm.SentencePieceProcessor:
    path = Path(tokenizer_path)
    if not path.is_file():
        raise DataError(f"tokenizer file {str(path)!r} does not exist or is not a file")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as exc:
        raise DataError(f"tokenizer file {str(path)!r} is not a readable SentencePiece model: {exc}") from exc


def build_byte_luts(tokenizer_path: str | Path, vocab_size: int) -> ByteLUTs:
    """Byte tables of the SentencePiece model or byte tokenizer spec at ``tokenizer_path``.

    ``vocab_size`` is the model's vocabulary and must equal the tokenizer's: a model scoring
    ids the tokenizer never emits (or missing some it does) would make the byte count and
    the distribution disagree. A malformed byte spec raises DataError naming the file.
    """
    if looks_like_byte_spec(tokenizer_path):
        return import_by_name(BYTE_DATA_MODULE).byte_spec_luts(tokenizer_path, vocab_size)
    sp = _load_sentencepiece(tokenizer_path)
    sp_vocab = int(sp.vocab_size())
    if sp_vocab != vocab_size:
        raise DataError(
            f"tokenizer file {str(tokenizer_path)!r} has vocab size {sp_vocab}, "
            f"but the model's vocab_size is {vocab_size}; they must be equal"
        )
    if sp.piece_to_id(SPACE_MARKER) == sp.unk_id():
        raise DataError(
            f"tokenizer file {str(tokenizer_path)!r} has no piece {SPACE_MARKER!r} (U+2581, a lone space): "
            "a space that merges with nothing is then spelled as its 3 UTF-8 byte pieces, each counted "
            "as a byte, so BPB would be understated (upstream issue #897); retrain it so that the "
            "space is a piece of its own"
        )
    base = [0] * vocab_size
    space = [False] * vocab_size
    boundary = [True] * vocab_size
    for token_id in range(vocab_size):
        if sp.is_control(token_id) or sp.is_unknown(token_id) or sp.is_unused(token_id):
            continue  # 0 bytes, boundary
        boundary[token_id] = False
        if sp.is_byte(token_id):
            base[token_id] = 1
            continue
        piece = sp.id_to_piece(token_id)
        if piece.startswith(SPACE_MARKER):
            space[token_id] = True
            piece = piece[len(SPACE_MARKER) :]
        base[token_id] = len(piece.encode("utf-8"))
    return ByteLUTs(
        base_bytes=torch.tensor(base, dtype=torch.int32),
        has_leading_space=torch.tensor(space, dtype=torch.bool),
        is_boundary=torch.tensor(boundary, dtype=torch.bool),
        vocab_size=vocab_size,
    )


def count_bytes(luts: ByteLUTs, prev_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """Bytes of each target given the token before it (same shape as ``target_ids``, int32).

    Ids must lie in [0, V) and sit on the tables' device; they are not range-checked here,
    because that would force a host sync per batch on CUDA (the evaluators check once).
    """
    if prev_ids.shape != target_ids.shape:
        raise DataError(
            f"count_bytes: prev_ids shape {tuple(prev_ids.shape)} differs from "
            f"target_ids shape {tuple(target_ids.shape)}"
        )
    space = luts.has_leading_space[target_ids] & ~luts.is_boundary[prev_ids]
    return luts.base_bytes[target_ids] + space.to(torch.int32)


def tokenizer_sha256(path: str | Path) -> str:
    """Hex SHA-256 of the tokenizer file, recorded so a score names the exact byte tables."""
    file = Path(path)
    digest = hashlib.sha256()
    try:
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"tokenizer file {str(file)!r} cannot be read: {exc}") from exc
    return digest.hexdigest()
