"""Fuzz the token-shard readers (`harness.pipeline.shards`): a real shard written by `write_shard` is
mutated thousands of times and read the ways a run reads it (`load_validation_tokens` for
the val split, `TokenStream` for training). Each input must load sanely or raise a
`PgolfError` (a `DataError` naming the file) — never another exception, a hang, or an
allocation sized by a lying header.

Mutation families: raw bytes anywhere; the header's magic/version/token-count fields set to
interesting integers (negative, 2**31 - 1, off by one); token ids beyond the vocabulary;
pickle payloads in place of a shard.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from harness.pipeline.shards import (
    HEADER_BYTES,
    TokenStream,
    load_validation_tokens,
    validation_span,
    write_shard,
)
from tests.fuzz.conftest import Mutator, fuzz_count, pickle_payload

DEFAULT_N = 2000
VOCAB = 1024
SEQ_LEN = 64


@pytest.fixture(scope="module")
def shard_bytes(tmp_path_factory) -> bytes:
    """A real val shard of 1,500 random ids in [0, 1024), as the writer lays it out."""
    path = tmp_path_factory.mktemp("shard") / "fineweb_val_000000.bin"
    tokens = np.random.default_rng(0).integers(0, VOCAB, size=1500, dtype=np.int64)
    write_shard(path, tokens, vocab_size=VOCAB)
    return path.read_bytes()


class ShardMutator(Mutator):
    """Shard-aware mutations on top of the generic ones."""

    def mutate(self, blob: bytes, marker: Path) -> tuple[str, bytes]:
        kind = self.rng.choice(("bytes", "bytes", "header", "header", "token", "pickle"))
        if kind == "bytes":
            sub, out = self.bytes_(blob)
            return f"bytes:{sub}", out
        buf = bytearray(blob)
        if kind == "header":
            field = self.rng.choice((0, 1, 2, 2, 2))  # magic, version, token count (int32 each)
            if field == 2 and self.rng.random() < 0.3:  # a count off by a little: size mismatch
                count = int.from_bytes(buf[8:12], "little", signed=True) + self.rng.choice((-1, 1, 1000))
                buf[8:12] = (count % 2**32).to_bytes(4, "little")
                return "header:count_near", bytes(buf)
            return f"header:{('magic', 'version', 'count')[field]}", bytes(
                self.overwrite_int(buf, 4 * field, "<I")
            )
        if kind == "token":
            at = HEADER_BYTES + 2 * self.rng.randrange((len(buf) - HEADER_BYTES) // 2)
            buf[at : at + 2] = self.rng.choice((VOCAB, VOCAB + 1, 0xFFFF, 0x8000)).to_bytes(2, "little")
            return "token:out_of_vocab", bytes(buf)
        return "pickle:file", pickle_payload(marker)


def _check_val(tokens) -> None:
    assert tokens.dtype.is_floating_point is False and tokens.ndim == 1
    assert int(tokens.min()) >= 0 and int(tokens.max()) < VOCAB
    assert (tokens.numel() - 1) % SEQ_LEN == 0


def _fuzz(shard_bytes: bytes, tmp_path: Path, make_tally, n: int, seed: int) -> None:
    rng = random.Random(seed)
    mut = ShardMutator(rng)
    marker = tmp_path / "UNPICKLED"
    val_dir = tmp_path / "data"
    val_dir.mkdir()
    (val_dir / "fineweb_val_000000.bin").write_bytes(shard_bytes)  # the val split always exists
    val = val_dir / "fineweb_val_000000.bin"
    train = val_dir / "fineweb_train_000000.bin"
    val_tally = make_tally(f"shard load_validation_tokens (seed {seed})")
    train_tally = make_tally(f"shard TokenStream.take (seed {seed})")
    for i in range(n):
        kind, data = mut.mutate(shard_bytes, marker)
        if i % 2 == 0:
            val.write_bytes(data)
            val_tally.run(kind, lambda: load_validation_tokens(val_dir, SEQ_LEN, VOCAB), _check_val)
        else:
            train.write_bytes(data)
            # 4,000 tokens from a shard of at most a few thousand: the stream wraps around.
            train_tally.run(kind, lambda: TokenStream([train], VOCAB).take(4000), _check_train)
    assert not marker.exists(), "a pickle payload was unpickled"


def _check_train(tokens: np.ndarray) -> None:
    assert tokens.shape == (4000,) and int(tokens.max()) < VOCAB


def test_fuzz_shard_readers(shard_bytes, tmp_path, tally_guard):
    _fuzz(shard_bytes, tmp_path, tally_guard, DEFAULT_N, seed=11)


@pytest.mark.fuzz
def test_fuzz_shard_readers_long(shard_bytes, tmp_path, tally_guard, request):
    _fuzz(shard_bytes, tmp_path, tally_guard, fuzz_count(request, DEFAULT_N), seed=110)


def test_unmutated_shard_loads(shard_bytes, tmp_path):
    (tmp_path / "fineweb_val_000000.bin").write_bytes(shard_bytes)
    tokens = load_validation_tokens(tmp_path, SEQ_LEN, VOCAB)
    assert tokens.numel() == validation_span(1500, SEQ_LEN)
    _check_val(tokens)
