"""Token shards: the `.bin` format, the validation and training loaders, and fingerprints.

Format and loader semantics follow upstream `openai/parameter-golf` `train_gpt.py`
(`load_data_shard`, `TokenStream`, `DistributedTokenLoader`, `load_validation_tokens`) and
its export script (`data/download_hf_docs_and_tokenize.py`), as summarized in
docs/protocol.md §1.1 and §1.3-1.4: a 256 x int32 little-endian header (magic 20240520, version 1,
token count) followed by little-endian uint16 token ids; train shards are streamed in
sorted order and wrap around; each step takes ``world_size * (local + 1)`` contiguous
tokens and rank ``r`` keeps its own span. Unlike upstream, every malformed input raises a
`DataError` naming the file and the field, and token ids are checked against the
vocabulary (the data-preparation lesson of docs/pitfalls.md §1.2: bad data must fail loudly).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.api.errors import ConfigError, DataError
from harness.api.fileio import write_atomic

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = 1024
MAX_SHARD_TOKENS = 2**31
"""Upstream's writer refuses this many tokens or more (the count must fit an int32)."""
SPLITS = ("train", "val")
_HASH_CHUNK = 1 << 20


def _as_token_array(tokens: Any, path: Path) -> np.ndarray:
    """Any 1-D integer sequence (list, numpy array, torch tensor) as a numpy array."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    arr = np.asarray(tokens)
    if arr.size == 0:
        return arr.reshape(0).astype(np.uint16)
    if arr.ndim != 1:
        raise DataError(f"{path}: tokens must be 1-D, got shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{path}: tokens must be integers, got dtype {arr.dtype}")
    return arr


def _first_bad(arr: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """(position, id) of the first True entry of mask."""
    pos = int(np.flatnonzero(mask)[0])
    return pos, int(arr[pos])


def _check_writable_ids(arr: np.ndarray, vocab_size: int | None, path: Path) -> None:
    """Refuse ids a uint16 shard cannot hold or the vocabulary does not have."""
    if arr.size == 0:
        return
    if arr.size >= MAX_SHARD_TOKENS:
        raise DataError(f"{path}: {arr.size} tokens; a shard holds fewer than 2**31")
    if arr.dtype != np.uint16:
        if int(arr.min()) < 0:
            pos, tok = _first_bad(arr, arr < 0)
            raise DataError(f"{path}: token id {tok} at position {pos} is negative")
        if int(arr.max()) > 65535:
            pos, tok = _first_bad(arr, arr > 65535)
            raise DataError(f"{path}: token id {tok} at position {pos} does not fit uint16 (max 65535)")
    if vocab_size is not None and int(arr.max()) >= vocab_size:
        pos, tok = _first_bad(arr, arr >= vocab_size)
        raise DataError(f"{path}: token id {tok} at position {pos} is >= vocab_size {vocab_size}")


def write_shard(path: str | os.PathLike[str], tokens: Any, vocab_size: int | None = None) -> None:
    """Write ``tokens`` as a shard at ``path``, atomically (temp file + ``os.replace``).

    ``vocab_size``, when given, makes every id ``>= vocab_size`` an error.
    """
    path = Path(path)
    arr = _as_token_array(tokens, path)
    _check_writable_ids(arr, vocab_size, path)
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, arr.size)
    payload = arr.astype("<u2", copy=False)
    write_atomic(path, [header.tobytes(), payload.tobytes()])


def read_shard_header(path: str | os.PathLike[str]) -> int:
    """Validate a shard's header and size; return its token count."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(HEADER_BYTES)
    except FileNotFoundError:
        raise DataError(f"shard {path} does not exist") from None
    except OSError as exc:
        raise DataError(f"shard {path} cannot be read: {exc}") from None
    if len(raw) < HEADER_BYTES:
        raise DataError(
            f"shard {path}: size is {size} bytes, expected at least the {HEADER_BYTES}-byte header"
        )
    header = np.frombuffer(raw, dtype="<i4")
    if int(header[0]) != SHARD_MAGIC:
        raise DataError(f"shard {path}: magic is {int(header[0])}, expected {SHARD_MAGIC}")
    if int(header[1]) != SHARD_VERSION:
        raise DataError(f"shard {path}: version is {int(header[1])}, expected {SHARD_VERSION}")
    count = int(header[2])
    if count < 0:
        raise DataError(f"shard {path}: token count is {count}, expected >= 0")
    expected = HEADER_BYTES + 2 * count
    if size != expected:
        raise DataError(
            f"shard {path}: size is {size} bytes, expected {expected} (1024 + 2 * {count} tokens)"
        )
    return count


def read_shard(path: str | os.PathLike[str]) -> np.ndarray:
    """The shard's tokens as a read-only uint16 array (a memmap when non-empty)."""
    count = read_shard_header(path)
    if count == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(count,))


def list_shards(data_path: str | os.PathLike[str], split: str) -> list[Path]:
    """Sorted ``fineweb_<split>_*.bin`` files of a folder, without CaseOps ``_bytes_`` sidecars."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    folder = Path(data_path)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist")
    pattern = f"fineweb_{split}_*.bin"
    # `fineweb_val_*.bin` also matches CaseOps byte sidecars (glob hazard, docs/protocol.md §1.2).
    files = sorted((p for p in folder.glob(pattern) if "_bytes_" not in p.name), key=lambda p: p.name)
    if not files:
        raise DataError(f"data folder {folder} holds no {split} shard matching {pattern}")
    return files


def check_token_range(tokens: Any, vocab_size: int, path: str | os.PathLike[str]) -> None:
    """DataError if any id is ``>= vocab_size`` (naming the file, the id and its position)."""
    arr = np.asarray(tokens)
    if arr.size == 0:
        return
    top = int(arr.max())
    if top >= vocab_size:
        pos = int(np.flatnonzero(arr >= vocab_size)[0])
        raise DataError(f"{path}: token id {int(arr[pos])} at position {pos} is >= vocab_size {vocab_size}")


def validation_span(num_tokens: int, seq_len: int, max_targets: int = 0) -> int:
    """How many of ``num_tokens`` validation tokens are kept (scored targets + 1).

    Upstream keeps ``((N - 1) // seq_len) * seq_len + 1``; ``max_targets > 0`` caps the
    targets at ``max(seq_len, (max_targets // seq_len) * seq_len)`` for quick runs.
    """
    targets = ((num_tokens - 1) // seq_len) * seq_len
    if max_targets > 0:
        targets = min(targets, max(seq_len, (max_targets // seq_len) * seq_len))
    return targets + 1


def load_validation_tokens(
    data_path: str | os.PathLike[str], seq_len: int, vocab_size: int, max_targets: int = 0
) -> torch.Tensor:
    """All val shards concatenated and truncated to whole sequences, as int64 on CPU."""
    if seq_len <= 0:
        raise ConfigError(f"seq_len must be positive, got {seq_len}")
    parts = []
    for path in list_shards(data_path, "val"):
        tokens = read_shard(path)
        check_token_range(tokens, vocab_size, path)
        parts.append(tokens)
    total = sum(p.size for p in parts)
    if total < seq_len + 1:
        raise DataError(
            f"validation split in {data_path} has {total} tokens, fewer than seq_len + 1 = {seq_len + 1}"
        )
    keep = validation_span(total, seq_len, max_targets)
    joined = np.concatenate(parts)[:keep]
    return torch.from_numpy(joined.astype(np.int64))


class TokenStream:
    """Tokens of the train shards in order, wrapping around to the first after the last."""

    def __init__(self, files: Sequence[str | os.PathLike[str]], vocab_size: int) -> None:
        self.files = [Path(f) for f in files]
        if not self.files:
            raise DataError("TokenStream needs at least one train shard, got none")
        self.vocab_size = vocab_size
        self._checked: set[int] = set()
        self.reset()

    def _load(self, idx: int) -> None:
        self.file_idx = idx
        self.tokens = read_shard(self.files[idx])
        if idx not in self._checked:
            check_token_range(self.tokens, self.vocab_size, self.files[idx])
            self._checked.add(idx)
        self.pos = 0

    def state(self) -> dict[str, int]:
        """Where the stream stands: shard index and offset inside it."""
        return {"file_idx": self.file_idx, "pos": self.pos}

    def reset(self, state: dict[str, int] | None = None) -> None:
        """Rewind to ``state`` (from `state()`), or to the very beginning when None."""
        state = state or {"file_idx": 0, "pos": 0}
        self._load(int(state["file_idx"]))
        self.pos = int(state["pos"])

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` tokens (uint16), spanning shards as needed."""
        if n < 0:
            raise ConfigError(f"TokenStream.take needs n >= 0, got {n}")
        chunks: list[np.ndarray] = []
        remaining = n
        empty_advances = 0
        while remaining > 0:
            avail = self.tokens.size - self.pos
            if avail <= 0:
                # A full lap over empty shards would otherwise loop forever.
                empty_advances += 1
                if empty_advances > len(self.files):
                    raise DataError(f"all {len(self.files)} train shards are empty (first: {self.files[0]})")
                self._load((self.file_idx + 1) % len(self.files))
                continue
            empty_advances = 0
            k = min(remaining, avail)
            chunks.append(np.asarray(self.tokens[self.pos : self.pos + k]))
            self.pos += k
            remaining -= k
        if not chunks:
            return np.zeros(0, dtype=np.uint16)
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


class DistributedTokenLoader:
    """Per-rank (x, y) micro-batches cut from one shared, contiguous token stream."""

    def __init__(
        self,
        data_path: str | os.PathLike[str],
        rank: int,
        world_size: int,
        device: torch.device | str,
        vocab_size: int,
    ) -> None:
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.stream = TokenStream(list_shards(data_path, "train"), vocab_size)

    def local_tokens(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> int:
        """Tokens per rank per micro-step; must be a positive multiple of ``seq_len``."""
        if grad_accum_steps <= 0 or seq_len <= 0:
            raise ConfigError(
                f"grad_accum_steps ({grad_accum_steps}) and train_seq_len ({seq_len}) must be positive"
            )
        local = global_tokens // (self.world_size * grad_accum_steps)
        if local <= 0 or local % seq_len != 0:
            raise ConfigError(
                f"train_batch_tokens={global_tokens} // (world_size={self.world_size} * "
                f"grad_accum_steps={grad_accum_steps}) = {local} tokens per rank per micro-step, "
                f"which must be a positive multiple of train_seq_len={seq_len}"
            )
        return local

    def next_batch(
        self, global_tokens: int, seq_len: int, grad_accum_steps: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One micro-step: (x, y), each (local // seq_len, seq_len) int64 on the device."""
        local = self.local_tokens(global_tokens, seq_len, grad_accum_steps)
        span = local + 1  # one extra token so y is x shifted by one
        chunk = self.stream.take(span * self.world_size)
        mine = torch.from_numpy(chunk[self.rank * span : (self.rank + 1) * span].astype(np.int64))
        x = mine[:-1].reshape(-1, seq_len)
        y = mine[1:].reshape(-1, seq_len)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def state(self) -> dict[str, int]:
        """The underlying stream's position."""
        return self.stream.state()

    def reset(self, state: dict[str, int] | None = None) -> None:
        """Rewind (after compile-priming steps): to ``state`` or to the very beginning."""
        self.stream.reset(state)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        raise DataError(f"cannot hash {path}: file does not exist") from None
    return digest.hexdigest()


def dataset_fingerprint(paths: Iterable[str | os.PathLike[str]]) -> str:
    """sha256 over the files in order, each as ``name NUL sha256(bytes) LF``.

    Names count so that a renamed or reordered split changes the fingerprint, not only
    edited content (docs/pitfalls.md §1.2: the validation split is a fixed, hashed fixture).
    """
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        digest.update(f"{path.name}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()
