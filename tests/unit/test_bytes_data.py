"""Byte variants of SentencePiece datasets and BPB with the byte tokenizer.

References are independent of the converter: SentencePiece decoding of the sp shards cut at
BOS by plain Python, hand-written texts, the arithmetic identity ln 256 = 8 ln 2, and a
byte-unigram "oracle" whose bits are summed over the bytes each SentencePiece token stands
for, so the same bytes are counted once under both tokenizations.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

from harness.api.errors import ConfigError, DataError
from harness.datasets import default as default_data
from harness.datasets.byte_level import (
    BYTE_VOCAB,
    LossyDecodeWarning,
    convert_to_bytes,
    is_byte_tokenizer,
    read_byte_tokenizer_spec,
    write_byte_tokenizer_spec,
)
from harness.pipeline.bpb import build_byte_luts, count_bytes, tokenizer_sha256
from harness.pipeline.eval import evaluate_standard
from harness.pipeline.shards import list_shards, load_validation_tokens, read_shard, write_shard

OFFICIAL_SP1024 = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "tokenizers" / "fineweb_1024_bpe.model"
)
BOS = 1
SPACE = "\u2581"


@pytest.fixture(scope="session")
def bytes_dataset(default_dataset):
    """The byte variant of the default dataset, built once per session (after the sp1024 one)."""
    return default_data.ensure_default_dataset(progress=False, variant="bytes")


def _split_tokens(data_path: Path, split: str) -> list[int]:
    return [int(t) for path in list_shards(data_path, split) for t in read_shard(path)]


def _documents(tokens: list[int]) -> list[list[int]]:
    """Cut a BOS-prefixed stream into documents with plain Python (the reference)."""
    assert tokens and tokens[0] == BOS
    docs: list[list[int]] = []
    for tok in tokens:
        if tok == BOS:
            docs.append([])
        else:
            docs[-1].append(tok)
    return docs


def _byte_stream(data_path: Path, split: str) -> bytes:
    tokens = np.concatenate([np.asarray(read_shard(p)) for p in list_shards(data_path, split)])
    assert tokens.max(initial=0) < 256
    return tokens.astype(np.uint8).tobytes()


# --- (1) the default dataset's byte variant ---------------------------------------------------


@pytest.mark.parametrize("split", ["val", "train"])
def test_byte_variant_is_the_utf8_of_the_decoded_documents(default_dataset, bytes_dataset, split):
    sp = spm.SentencePieceProcessor(model_file=str(default_dataset.tokenizer_path))
    docs = [sp.decode(ids) for ids in _documents(_split_tokens(default_dataset.data_path, split))]
    stream = _byte_stream(bytes_dataset.data_path, split)
    assert len(stream) == sum(len(doc.encode("utf-8")) for doc in docs)
    assert stream.decode("utf-8") == "".join(docs)
    assert bytes_dataset.manifest["num_bytes"][split] == len(stream)
    assert (
        bytes_dataset.manifest["num_docs"][split] == len(docs) == default_dataset.manifest["num_docs"][split]
    )


def test_default_byte_variant_layout_and_manifest(default_dataset, bytes_dataset):
    m = bytes_dataset.manifest
    assert bytes_dataset.data_path.parent == default_dataset.data_path.parent
    assert bytes_dataset.data_path != default_dataset.data_path
    assert bytes_dataset.tokenizer_path == bytes_dataset.data_path / "tokenizer.json"
    assert is_byte_tokenizer(bytes_dataset.tokenizer_path)
    assert not is_byte_tokenizer(default_dataset.tokenizer_path)
    assert m["lossless"] is True and m["unknown_total"] == 0 and m["source"]["byte_fallback"] is True
    # Lossless: the SentencePiece BPB denominator counts exactly the bytes written.
    assert m["source_lut_bytes"] == m["num_bytes"]
    assert m["source"]["tokenizer_sha256"] == tokenizer_sha256(default_dataset.tokenizer_path)
    assert m == json.loads((bytes_dataset.data_path / "manifest.json").read_text(encoding="utf-8"))
    for split in ("val", "train"):
        assert [p.name for p in list_shards(bytes_dataset.data_path, split)] == m["files"][split]


def test_second_call_reuses_the_byte_variant(bytes_dataset):
    before = {p.name: p.stat().st_mtime_ns for p in bytes_dataset.data_path.iterdir()}
    again = default_data.ensure_default_dataset(progress=False, variant="bytes")
    assert again.data_path == bytes_dataset.data_path and again.manifest == bytes_dataset.manifest
    assert {p.name: p.stat().st_mtime_ns for p in bytes_dataset.data_path.iterdir()} == before


def test_unknown_variant_names_the_setting():
    with pytest.raises(ConfigError, match=r"data\.default_variant='byte260'.*'sp1024'.*'bytes'"):
        default_data.ensure_default_dataset(progress=False, variant="byte260")


# --- (2) and (3) BPB with the byte tokenizer -----------------------------------------------------


def test_uniform_model_scores_exactly_8_bits_per_byte(bytes_dataset):
    luts = build_byte_luts(bytes_dataset.tokenizer_path, BYTE_VOCAB)
    tokens = load_validation_tokens(
        bytes_dataset.data_path, seq_len=128, vocab_size=BYTE_VOCAB, max_targets=8192
    )

    def uniform(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*x.shape, BYTE_VOCAB, dtype=torch.float64)

    result = evaluate_standard(uniform, tokens, luts, seq_len=128, batch_seqs=16, device="cpu")
    assert result.tokens == result.bytes == 8192  # every byte counted once
    assert result.val_bpb == pytest.approx(8.0, rel=0, abs=1e-12)  # ln 256 / ln 2


def _unigram_bits(data_path: Path) -> np.ndarray:
    """-log2 p(byte) of an add-one byte unigram fitted on the train bytes."""
    counts = np.bincount(np.frombuffer(_byte_stream(data_path, "train"), dtype=np.uint8), minlength=256) + 1.0
    return -np.log2(counts / counts.sum())


def _piece_bytes(sp: spm.SentencePieceProcessor, token: int, after_boundary: bool) -> bytes:
    """The bytes one SentencePiece token stands for, given whether it follows BOS/UNK/etc."""
    if sp.is_control(token) or sp.is_unknown(token) or sp.is_unused(token):
        return b""
    piece = sp.id_to_piece(token)
    if sp.is_byte(token):
        return bytes([int(piece[3:5], 16)])  # "<0xNN>"
    if piece.startswith(SPACE):
        piece = ("" if after_boundary else " ") + piece[1:]
    return piece.encode("utf-8")


def test_bpb_is_equal_across_tokenizations(default_dataset, bytes_dataset):
    bits = _unigram_bits(bytes_dataset.data_path)
    byte_val = _byte_stream(bytes_dataset.data_path, "val")
    byte_bits = math.fsum(bits[b] for b in byte_val)

    sp = spm.SentencePieceProcessor(model_file=str(default_dataset.tokenizer_path))
    sp_val = torch.tensor(_split_tokens(default_dataset.data_path, "val"), dtype=torch.int64)
    luts = build_byte_luts(default_dataset.tokenizer_path, sp.vocab_size())
    prev = torch.cat([torch.tensor([BOS]), sp_val[:-1]])
    lut_counts = count_bytes(luts, prev, sp_val).tolist()
    boundary = luts.is_boundary.tolist()
    surfaces = [_piece_bytes(sp, t, boundary[p]) for p, t in zip(prev.tolist(), sp_val.tolist(), strict=True)]
    assert [len(s) for s in surfaces] == lut_counts  # the oracle counts what the LUTs count
    assert b"".join(surfaces) == byte_val  # the same bytes, in the same order
    sp_bits = math.fsum(bits[b] for s in surfaces for b in s)

    assert sum(lut_counts) == len(byte_val)
    assert sp_bits / sum(lut_counts) == pytest.approx(byte_bits / len(byte_val), rel=0, abs=1e-9)


def test_harness_eval_matches_a_direct_byte_sum(bytes_dataset):
    bits = _unigram_bits(bytes_dataset.data_path)
    log_probs = torch.tensor(-bits * math.log(2.0), dtype=torch.float64)
    tokens = load_validation_tokens(
        bytes_dataset.data_path, seq_len=256, vocab_size=BYTE_VOCAB, max_targets=16384
    )

    def unigram(x: torch.Tensor) -> torch.Tensor:
        return log_probs.expand(*x.shape, BYTE_VOCAB)

    luts = build_byte_luts(bytes_dataset.tokenizer_path, BYTE_VOCAB)
    result = evaluate_standard(unigram, tokens, luts, seq_len=256, batch_seqs=8, device="cpu")
    targets = tokens[1:].tolist()
    assert result.bytes == len(targets)
    assert result.val_bpb == pytest.approx(math.fsum(bits[t] for t in targets) / len(targets), rel=1e-12)


# --- conversion of hand-written data -------------------------------------------------------------


def _write_sp_dataset(
    folder: Path, sp: spm.SentencePieceProcessor, splits: dict[str, list[str]], shard: int
) -> dict:
    """BOS-prefixed documents per split, cut into shards of ``shard`` tokens (docs straddle them)."""
    encoded = {}
    for split, texts in splits.items():
        ids = [sp.encode(text) for text in texts]
        stream = [t for doc in ids for t in (BOS, *doc)]
        for index, start in enumerate(range(0, len(stream), shard)):
            write_shard(
                folder / f"fineweb_{split}_{index:06d}.bin",
                stream[start : start + shard],
                vocab_size=sp.vocab_size(),
            )
        encoded[split] = ids
    return encoded


def test_conversion_straddles_shards_and_keeps_splits_apart(default_dataset, tmp_path, recwarn):
    sp = spm.SentencePieceProcessor(model_file=str(default_dataset.tokenizer_path))
    texts = {
        "val": [
            "Caf\u00e9 cr\u00e8me, na\u00efve r\u00e9sum\u00e9.",
            "A second document with \U0001f600 and \u6f22\u5b57.",
        ],
        "train": ["Train text one.", "", "The third train document: x = 1 + 2."],
    }
    source = tmp_path / "sp"
    source.mkdir()
    _write_sp_dataset(source, sp, texts, shard=7)
    assert len(list_shards(source, "val")) > 2  # documents do straddle source shards
    dest = convert_to_bytes(
        source, default_dataset.tokenizer_path, tmp_path / "bytes", progress=False, shard_tokens=16
    )
    m = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    for split, docs in texts.items():
        expected = "".join(docs).encode("utf-8")
        names = [p.name for p in list_shards(dest, split)]
        assert names == [f"fineweb_{split}_{i:06d}.bin" for i in range((len(expected) + 15) // 16)]
        sizes = [read_shard(dest / n).size for n in names]
        assert sizes[:-1] == [16] * (len(sizes) - 1) and 0 < sizes[-1] <= 16  # no train bytes in a val shard
        assert _byte_stream(dest, split) == expected
        assert m["num_docs"][split] == len(docs) and m["num_bytes"][split] == len(expected)
    assert m["lossless"] is True and m["source_lut_bytes"] == m["num_bytes"]
    assert not [w for w in recwarn if issubclass(w.category, LossyDecodeWarning)]
    assert read_byte_tokenizer_spec(dest / "tokenizer.json") == {
        "format": "pgolf-bytes/1",
        "kind": "bytes",
        "vocab_size": 256,
    }


def test_official_sp1024_conversion_is_lossy(tmp_path):
    if not OFFICIAL_SP1024.is_file():
        pytest.skip(f"official tokenizer not found at {OFFICIAL_SP1024}")
    sp = spm.SentencePieceProcessor(model_file=str(OFFICIAL_SP1024))
    texts = {"val": ["caf\u00e9 and more", "plain words"], "train": ["r\u00e9sum\u00e9 here", "ok"]}
    source = tmp_path / "sp"
    source.mkdir()
    encoded = _write_sp_dataset(source, sp, texts, shard=1000)
    # "é" has no piece and sp1024 has no byte fallback: each one becomes <unk> (hand count).
    assert [sum(t == sp.unk_id() for doc in encoded[s] for t in doc) for s in ("val", "train")] == [1, 2]
    with pytest.warns(LossyDecodeWarning, match="3 <unk> pieces"):
        dest = convert_to_bytes(source, OFFICIAL_SP1024, tmp_path / "bytes", progress=False)
    m = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    assert m["lossless"] is False and m["source"]["byte_fallback"] is False
    assert m["unknown_pieces"] == {"val": 1, "train": 2} and m["unknown_total"] == 3
    assert "\u00e9" not in _byte_stream(dest, "val").decode("utf-8")
    assert "\u2047" in _byte_stream(dest, "val").decode("utf-8")  # SentencePiece's " ⁇ " stand-in


# --- (4) errors --------------------------------------------------------------------------------


def test_byte_spec_with_a_wrong_vocab_size(tmp_path):
    spec = write_byte_tokenizer_spec(tmp_path)
    assert spec == tmp_path / "tokenizer.json"
    assert json.loads(spec.read_text(encoding="utf-8")) == {
        "format": "pgolf-bytes/1",
        "kind": "bytes",
        "vocab_size": 256,
    }
    luts = build_byte_luts(spec, 256)
    assert luts.base_bytes.tolist() == [1] * 256
    assert not luts.has_leading_space.any() and not luts.is_boundary.any()
    with pytest.raises(DataError, match=r"tokenizer\.json.*256.*1024"):
        build_byte_luts(spec, 1024)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("tokenizer.json", "{not json", "not valid JSON"),
        ("tokenizer.json", "[256]", "expected a JSON object"),
        ("tok.txt", '{"format": "pgolf-bytes/1", "kind": "byte", "vocab_size": 256}', "'kind' is 'byte'"),
        ("tokenizer.json", '{"format": "pgolf-bytes/2", "kind": "bytes", "vocab_size": 256}', "'format'"),
        (
            "tokenizer.json",
            '{"format": "pgolf-bytes/1", "kind": "bytes", "vocab_size": 260}',
            "'vocab_size' is 260",
        ),
        (
            "tokenizer.json",
            '{"format": "pgolf-bytes/1", "kind": "bytes", "vocab_size": true}',
            "'vocab_size' is True",
        ),
        ("tokenizer.json", '{"format": "pgolf-bytes/1", "kind": "bytes"}', "'vocab_size' is None"),
        (
            "tokenizer.json",
            '{"format": "pgolf-bytes/1", "kind": "bytes", "vocab_size": 256, "eos": 2}',
            "unknown field",
        ),
    ],
)
def test_malformed_byte_spec_names_the_file(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=match) as info:
        build_byte_luts(path, 256)
    assert name in str(info.value)


def test_convert_refuses_a_non_empty_destination_and_a_byte_source(default_dataset, bytes_dataset, tmp_path):
    (tmp_path / "stale.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not an empty folder"):
        convert_to_bytes(default_dataset.data_path, default_dataset.tokenizer_path, tmp_path, progress=False)
    with pytest.raises(DataError, match="already a byte tokenizer"):
        convert_to_bytes(
            bytes_dataset.data_path, bytes_dataset.tokenizer_path, tmp_path / "new", progress=False
        )
