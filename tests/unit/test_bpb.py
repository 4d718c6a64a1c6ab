"""Byte tables checked against the official challenge tokenizers and hand-counted bytes.

The independent reference is SentencePiece itself: Σ count_bytes over a BOS-prefixed
document must equal the UTF-8 length of ``sp.decode(ids)``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from harness.api.errors import DataError
from harness.pipeline.bpb import ByteLUTs, build_byte_luts, count_bytes, tokenizer_sha256

TOKENIZERS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "tokenizers"
SP1024 = TOKENIZERS / "fineweb_1024_bpe.model"
SP8192 = TOKENIZERS / "fineweb_8192_bpe.model"
BOS = 1

PROSE = (
    "The quick brown fox, having jumped over the lazy dog, rested; then it ran away! "
    "Why? Nobody knows... (really).\nA new line: 'quoted' and \"double-quoted\" text."
)
DIGITS = "In 2024 there were 1,234,567 visitors and 89.5% of them paid $3.50 each."
SPACES = "Multiple   spaces    here,\n\n\nthree newlines,\ttab and trailing   "
NON_ASCII = "café – naïve 日本語 🙂 and more"
ASCII_TEXTS = (PROSE, DIGITS, SPACES)


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"official tokenizer {path} not found (shared reference data absent)")
    return path


def _processor(path: Path) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(_need(path)))


def _stream_bytes(luts: ByteLUTs, ids: list[int]) -> int:
    stream = torch.tensor(ids, dtype=torch.int64)
    return int(count_bytes(luts, stream[:-1], stream[1:]).sum())


@pytest.fixture(scope="module")
def sp1024() -> tuple[spm.SentencePieceProcessor, ByteLUTs]:
    return _processor(SP1024), build_byte_luts(SP1024, 1024)


@pytest.fixture(scope="module")
def sp8192() -> tuple[spm.SentencePieceProcessor, ByteLUTs]:
    return _processor(SP8192), build_byte_luts(SP8192, 8192)


@pytest.mark.parametrize("text", ASCII_TEXTS)
def test_sp1024_bytes_equal_decoded_utf8(sp1024, text: str) -> None:
    sp, luts = sp1024
    ids = sp.encode(text)
    assert sp.unk_id() not in ids  # otherwise the decoded text has a " ⁇ " the LUT does not count
    assert _stream_bytes(luts, [BOS, *ids]) == len(sp.decode(ids).encode("utf-8"))


@pytest.mark.parametrize("text", (*ASCII_TEXTS, NON_ASCII))
def test_sp8192_bytes_equal_decoded_utf8(sp8192, text: str) -> None:
    sp, luts = sp8192
    ids = sp.encode(text)
    assert _stream_bytes(luts, [BOS, *ids]) == len(sp.decode(ids).encode("utf-8"))


def test_byte_fallback_pieces_count_one_byte(sp8192) -> None:
    sp, luts = sp8192
    ids = sp.encode(NON_ASCII)
    byte_ids = [i for i in ids if sp.is_byte(i)]
    assert len(byte_ids) >= 10  # the CJK and emoji characters fall back to bytes
    for token_id in byte_ids:
        assert luts.base_bytes[token_id] == 1
        assert not luts.has_leading_space[token_id]
        assert not luts.is_boundary[token_id]
    assert NON_ASCII.encode("utf-8") == sp.decode(ids).encode("utf-8")


def test_several_documents_in_one_stream(sp1024) -> None:
    sp, luts = sp1024
    stream: list[int] = []
    expected = 0
    for text in ASCII_TEXTS:
        ids = sp.encode(text)
        stream += [BOS, *ids]
        expected += len(sp.decode(ids).encode("utf-8"))
    # The first piece of each document follows a BOS, so its space flag must not count.
    assert _stream_bytes(luts, stream) == expected


def test_specific_pieces_of_sp1024(sp1024) -> None:
    sp, luts = sp1024
    assert luts.vocab_size == 1024
    for special in (0, 1, 2, 3):  # pad, bos, eos, unk
        assert luts.is_boundary[special] and luts.base_bytes[special] == 0
        assert not luts.has_leading_space[special]
    the = sp.piece_to_id("\u2581the")
    assert sp.id_to_piece(the) == "\u2581the"
    assert luts.has_leading_space[the] and luts.base_bytes[the] == 3  # not 4: no double space
    assert not luts.is_boundary[the]
    bare = sp.piece_to_id("\u2581")
    assert luts.has_leading_space[bare] and luts.base_bytes[bare] == 0
    he = sp.piece_to_id("he")
    assert not luts.has_leading_space[he] and luts.base_bytes[he] == 2
    prev = torch.tensor([BOS, he, he])
    target = torch.tensor([the, the, he])
    assert count_bytes(luts, prev, target).tolist() == [3, 4, 2]


def test_sp1024_unknown_counts_zero_bytes(sp1024) -> None:
    sp, luts = sp1024
    ids = sp.encode("caf\u00e9")
    assert [sp.id_to_piece(i) for i in ids] == ["c", "a", "f", "<unk>"]
    # Upstream accounting: the unknown piece is a boundary with 0 bytes -> c, a, f only.
    assert _stream_bytes(luts, [BOS, *ids]) == 3


def test_hand_built_tables() -> None:
    # ids: 0 BOS, 1 "a", 2 "▁bc", 3 a byte piece, 4 "▁"
    luts = ByteLUTs(
        base_bytes=torch.tensor([0, 1, 2, 1, 0], dtype=torch.int32),
        has_leading_space=torch.tensor([False, False, True, False, True]),
        is_boundary=torch.tensor([True, False, False, False, False]),
        vocab_size=5,
    )
    ids = [0, 2, 1, 2, 4, 3, 0, 4, 2]
    # "bc" (after BOS: no space) + "a" + " bc" + " " + byte + BOS + "" (after BOS) + " bc"
    expected = 2 + 1 + 3 + 1 + 1 + 0 + 0 + 3
    assert _stream_bytes(luts, ids) == expected


def test_vocab_mismatch_names_file_and_sizes() -> None:
    path = _need(SP1024)
    with pytest.raises(DataError, match=r"fineweb_1024_bpe\.model.*1024.*2048"):
        build_byte_luts(path, 2048)


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.model"
    with pytest.raises(DataError, match="nope.model"):
        build_byte_luts(missing, 1024)
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a sentencepiece model")
    with pytest.raises(DataError, match="garbage.model"):
        build_byte_luts(garbage, 1024)
    with pytest.raises(DataError, match="nope.model"):
        tokenizer_sha256(missing)


def test_table_shape_is_validated() -> None:
    with pytest.raises(DataError, match="base_bytes"):
        ByteLUTs(
            base_bytes=torch.zeros(4, dtype=torch.int64),
            has_leading_space=torch.zeros(4, dtype=torch.bool),
            is_boundary=torch.zeros(4, dtype=torch.bool),
            vocab_size=4,
        )


def test_tokenizer_sha256_matches_published_hash(tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"abc" * 1000)
    assert tokenizer_sha256(blob) == hashlib.sha256(b"abc" * 1000).hexdigest()
    # Hash published in shared/data/README.md for the official sp1024 model.
    assert tokenizer_sha256(_need(SP1024)) == (
        "849ea920119b5135ace5016137e82ab397738fc29d723d5f9a6b74c4e31af191"
    )
