"""Data and tokenizer bound together (harness.pipeline.data_binding), and the U+2581 rule of the byte tables.

Each attack is first shown to get past the checks that existed before (the tokenizer loads, its
vocabulary equals data.vocab_size, every shard id is in range) while changing the byte count that
BPB divides by; the reference byte count is the UTF-8 length of the documents SentencePiece
decodes with the tokenizer that made the shards. Then the binding check must refuse it.

The attacks: the official sp1024 model over the built-in sp1024 shards (needs ../shared/data;
skipped without it), a second 1024-piece tokenizer trained here on the same corpus (runs on a
fresh clone), and vocabulary 8192 over sp1024 shards. Each is tried with the dataset's manifest
(exact check) and on a copy of the shards without it (the sample check).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from harness.api.errors import DataError
from harness.pipeline.bpb import build_byte_luts, count_bytes, tokenizer_sha256
from harness.pipeline.data_binding import check_data_binding, sample_stats
from harness.pipeline.shards import load_validation_tokens, read_shard, write_shard

OFFICIAL_SP1024 = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "tokenizers" / "fineweb_1024_bpe.model"
)


def _documents(dataset) -> list[str]:
    """The default dataset's texts, decoded from its own shards (train then val)."""
    sp = spm.SentencePieceProcessor(model_file=str(dataset.tokenizer_path))
    texts = []
    for split in ("train", "val"):
        tokens = np.asarray(read_shard(dataset.data_path / f"fineweb_{split}_000000.bin")).astype(np.int64)
        docs = np.split(tokens, np.flatnonzero(tokens == 1))[1:]
        texts += sp.decode([d[1:].tolist() for d in docs])
    return texts


def _train(texts: list[str], vocab: int, byte_fallback: bool) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab,
        character_coverage=0.999,
        byte_fallback=byte_fallback,
        split_digits=True,
        normalization_rule_name="nmt_nfkc",
        add_dummy_prefix=False,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        hard_vocab_limit=False,
        max_sentence_length=1 << 20,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


@pytest.fixture(scope="module")
def corpus(default_dataset):
    return _documents(default_dataset)


@pytest.fixture(scope="module")
def second_tokenizer(corpus, tmp_path_factory) -> Path:
    """An independent 1024-piece tokenizer of the same corpus, without byte fallback (as the
    official sp1024 is): same vocabulary size, different pieces."""
    path = tmp_path_factory.mktemp("second") / "second_1024.model"
    path.write_bytes(_train(corpus, 1024, byte_fallback=False))
    return path


@pytest.fixture(scope="module")
def vocab8192_tokenizer(corpus, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("v8192") / "corpus_8192.model"
    path.write_bytes(_train(corpus, 8192, byte_fallback=True))
    return path


@pytest.fixture(scope="module")
def bare_copy(default_dataset, tmp_path_factory) -> Path:
    """The default shards without their manifest: upstream-style data."""
    folder = tmp_path_factory.mktemp("bare")
    for shard in default_dataset.data_path.glob("fineweb_*.bin"):
        shutil.copy(shard, folder / shard.name)
    return folder


def _true_val_bytes(dataset) -> int:
    """UTF-8 bytes of the validation documents, decoded by the tokenizer that made them."""
    sp = spm.SentencePieceProcessor(model_file=str(dataset.tokenizer_path))
    tokens = np.asarray(read_shard(dataset.data_path / "fineweb_val_000000.bin")).astype(np.int64)
    docs = np.split(tokens, np.flatnonzero(tokens == 1))[1:]
    return sum(len(t.encode("utf-8")) for t in sp.decode([d[1:].tolist() for d in docs]))


def _counted_val_bytes(dataset, tokenizer: Path, vocab: int) -> int:
    """What BPB would divide by: the byte tables of ``tokenizer`` over the whole val split."""
    val = load_validation_tokens(dataset.data_path, 1, vocab)  # seq_len 1 keeps every token
    luts = build_byte_luts(tokenizer, vocab)
    return int(count_bytes(luts, val[:-1], val[1:]).sum())


def _refuse(data: Path, tokenizer: Path, vocab: int, match: str) -> str:
    with pytest.raises(DataError, match=match) as err:
        check_data_binding(data, tokenizer, tokenizer_sha256(tokenizer), vocab)
    return str(err.value)


def test_own_tokenizer_is_accepted_with_and_without_manifest(default_dataset, bare_copy):
    ds = default_dataset
    assert ds.manifest["tokenizer_sha256"] == tokenizer_sha256(ds.tokenizer_path)
    assert ds.manifest["vocab_size"] == 1024
    assert check_data_binding(ds.data_path, ds.tokenizer_path, tokenizer_sha256(ds.tokenizer_path), 1024) == (
        "binding:manifest"
    )
    summary = check_data_binding(bare_copy, ds.tokenizer_path, tokenizer_sha256(ds.tokenizer_path), 1024)
    assert summary.startswith("binding:sample max_id:1023 ")
    assert "unk:0.0000 invalid_utf8:0.0000 mismatch:0.0000" in summary
    # The byte tables of the right tokenizer count exactly the decoded text's bytes
    # (+ the first token, which has no predecessor and is BOS: 0 bytes).
    assert _counted_val_bytes(ds, ds.tokenizer_path, 1024) == _true_val_bytes(ds)


def test_second_tokenizer_of_the_same_corpus_is_refused(default_dataset, bare_copy, second_tokenizer):
    ds = default_dataset
    # What got through before: it loads, has vocabulary 1024, every id is in range ...
    counted = _counted_val_bytes(ds, second_tokenizer, 1024)
    # ... and miscounts the bytes BPB divides by.
    assert abs(counted - _true_val_bytes(ds)) > 0.05 * _true_val_bytes(ds)
    msg = _refuse(ds.data_path, second_tokenizer, 1024, "sha256")
    assert ds.manifest["tokenizer_sha256"] in msg and tokenizer_sha256(second_tokenizer) in msg
    msg = _refuse(bare_copy, second_tokenizer, 1024, "change when the decoded text is encoded again")
    assert str(bare_copy) in msg and str(second_tokenizer) in msg


def test_official_sp1024_on_default_shards_is_refused(default_dataset, bare_copy):
    if not OFFICIAL_SP1024.is_file():
        pytest.skip(f"official tokenizer {OFFICIAL_SP1024} not found (shared reference data absent)")
    ds = default_dataset
    counted, true = _counted_val_bytes(ds, OFFICIAL_SP1024, 1024), _true_val_bytes(ds)
    assert counted > 1.05 * true  # 9.1 % more bytes: a lower, wrong BPB (3.546 instead of 3.818 in issue 11)
    _refuse(
        ds.data_path,
        OFFICIAL_SP1024,
        1024,
        "849ea920119b5135ace5016137e82ab397738fc29d723d5f9a6b74c4e31af191",
    )
    _refuse(bare_copy, OFFICIAL_SP1024, 1024, "change when the decoded text is encoded again")


def test_vocab_8192_over_sp1024_shards_is_refused(default_dataset, bare_copy, vocab8192_tokenizer):
    ds = default_dataset
    # What got through before: the tokenizer has 8192 pieces = data.vocab_size, ids < 8192.
    assert build_byte_luts(vocab8192_tokenizer, 8192).vocab_size == 8192
    load_validation_tokens(ds.data_path, 128, 8192)
    _refuse(
        ds.data_path, vocab8192_tokenizer, 8192, "tokenized with vocabulary 1024, but data.vocab_size is 8192"
    )
    _refuse(bare_copy, vocab8192_tokenizer, 8192, "largest token id is 1023, below half of vocab_size 8192")


def test_unk_heavy_and_invalid_utf8_samples_are_refused(corpus, second_tokenizer, default_dataset, tmp_path):
    no_fallback = spm.SentencePieceProcessor(model_file=str(second_tokenizer))
    # <unk>-heavy: text the tokenizer cannot spell (CJK; no byte fallback) by its own tokenizer.
    cjk = ["Parameter golf 参数高尔夫 比赛 每个 字节 都 计算 " * 4] * 10
    unk_ids = [t for ids in no_fallback.encode(cjk + corpus[:10]) for t in (1, *ids)]
    heavy = tmp_path / "heavy"
    heavy.mkdir()
    write_shard(heavy / "fineweb_val_000000.bin", unk_ids)
    stats = sample_stats(np.asarray(unk_ids), no_fallback)
    assert stats["unk"] == pytest.approx(unk_ids.count(3) / sum(t != 1 for t in unk_ids))
    assert stats["unk"] > 0.02
    _refuse(heavy, second_tokenizer, 1024, "<unk>-heavy")
    # Impossible output: shards of the no-fallback tokenizer read by one whose low ids are byte
    # pieces decode to invalid UTF-8.
    plain = tmp_path / "plain"
    plain.mkdir()
    write_shard(
        plain / "fineweb_val_000000.bin", [t for ids in no_fallback.encode(corpus[:20]) for t in (1, *ids)]
    )
    _refuse(plain, default_dataset.tokenizer_path, 1024, "invalid UTF-8")


def test_malformed_manifest_is_named(bare_copy, default_dataset, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(bare_copy, folder)
    (folder / "manifest.json").write_text('{"tokenizer_sha256": "abc", "vocab_size": 1024}')
    _refuse(folder, default_dataset.tokenizer_path, 1024, r"manifest.json: expected tokenizer_sha256")
    (folder / "manifest.json").write_text("{not json")
    _refuse(folder, default_dataset.tokenizer_path, 1024, r"manifest.json cannot be read as JSON")
    # A manifest that binds no tokenizer (e.g. someone else's) falls back to the sample check.
    (folder / "manifest.json").write_text(json.dumps({"files": []}))
    tok = default_dataset.tokenizer_path
    assert check_data_binding(folder, tok, tokenizer_sha256(tok), 1024).startswith("binding:sample")


def test_tokenizer_without_a_lone_space_piece_is_refused(tmp_path):
    # Trained on text with no spaces, the model has no U+2581 piece; with byte fallback a space
    # is then spelled <0xE2><0x96><0x81>: 3 pieces that each count 1 byte, for 1 real byte.
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["parametergolfbytesperbyte", "tokenizerwithoutspaces"] * 50),
        model_writer=model,
        model_type="bpe",
        vocab_size=300,
        byte_fallback=True,
        hard_vocab_limit=False,
        add_dummy_prefix=False,
        minloglevel=2,
        num_threads=1,
    )
    path = tmp_path / "nospace.model"
    path.write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert sp.piece_to_id("\u2581") == sp.unk_id()
    pieces = sp.encode("golf bytes", out_type=str)
    assert pieces[pieces.index("<0xE2>") : pieces.index("<0xE2>") + 3] == ["<0xE2>", "<0x96>", "<0x81>"]
    with pytest.raises(DataError, match=r"no piece '\u2581' \(U\+2581.*issue #897") as err:
        build_byte_luts(path, sp.vocab_size())
    assert str(path) in str(err.value)


def test_official_and_default_tokenizers_have_the_lone_space_piece(default_dataset):
    for path in (default_dataset.tokenizer_path, OFFICIAL_SP1024):
        if path.is_file():
            sp = spm.SentencePieceProcessor(model_file=str(path))
            assert sp.piece_to_id("\u2581") != sp.unk_id()
            assert build_byte_luts(path, 1024).has_leading_space.any()
