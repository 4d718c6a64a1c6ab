"""The sp8192 variant of the built-in default dataset (harness.datasets.default).

References: the published fineweb_8192_bpe.model's stored trainer and normalizer settings
(read with the protobuf reader of test_default_data; skipped without ../shared/data), the
upstream settings written out by hand, and the sp1024 variant of the same documents: both
variants must decode to the same validation text, document for document.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from harness.datasets import default as default_data
from harness.pipeline.data_binding import check_data_binding
from harness.pipeline.shards import file_sha256, read_shard
from tests.unit.test_default_data import NORMALIZER_FIELDS, TRAINER_FIELDS, spec

OFFICIAL_SP8192 = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "tokenizers" / "fineweb_8192_bpe.model"
)


@pytest.fixture(scope="session")
def sp8192_dataset(default_dataset):
    """The sp8192 variant, built once per session into the session cache."""
    return default_data.ensure_default_dataset(progress=False, variant="sp8192")


def _val_texts(dataset) -> list[str]:
    sp = spm.SentencePieceProcessor(model_file=str(dataset.tokenizer_path))
    tokens = np.asarray(read_shard(dataset.data_path / "fineweb_val_000000.bin")).astype(np.int64)
    return sp.decode([d[1:].tolist() for d in np.split(tokens, np.flatnonzero(tokens == 1))[1:]])


def test_layout_manifest_and_binding(sp8192_dataset, default_dataset):
    ds = sp8192_dataset
    assert (
        ds.data_path.name.startswith("cpython_docs_sp8192_py")
        and ds.data_path.parent == default_dataset.data_path.parent
    )
    m = ds.manifest
    assert m["vocab_size"] == 8192 and m["tokenizer"]["settings"]["vocab_size"] == 8192
    assert m["tokenizer_sha256"] == file_sha256(ds.tokenizer_path) == m["sha256"]["tokenizer.model"]
    assert spm.SentencePieceProcessor(model_file=str(ds.tokenizer_path)).vocab_size() == 8192
    assert (
        check_data_binding(ds.data_path, ds.tokenizer_path, m["tokenizer_sha256"], 8192) == "binding:manifest"
    )
    # The sp1024 and sp8192 folders never bind each other's tokenizer.
    assert m["tokenizer_sha256"] != default_dataset.manifest["tokenizer_sha256"]


def test_settings_are_the_official_sp8192_settings(sp8192_dataset):
    ours = spec(sp8192_dataset.tokenizer_path.read_bytes())
    # upstream data/download_hf_docs_and_tokenize.py, written out (BPE = enum value 2)
    assert ours["model_type"] == 2 and ours["vocab_size"] == 8192 and ours["byte_fallback"] == 1
    assert ours["split_digits"] == 1 and ours["hard_vocab_limit"] == 0
    assert ours["character_coverage"] == pytest.approx(0.999)
    assert (ours["pad_id"], ours["bos_id"], ours["eos_id"], ours["unk_id"]) == (0, 1, 2, 3)
    assert ours["normalizer_name"] == b"nmt_nfkc" and ours["normalizer_add_dummy_prefix"] == 0
    if not OFFICIAL_SP8192.is_file():
        pytest.skip(f"official tokenizer {OFFICIAL_SP8192} not found (shared reference data absent)")
    official = spec(OFFICIAL_SP8192.read_bytes())
    for key in [*TRAINER_FIELDS, *(f"normalizer_{k}" for k in NORMALIZER_FIELDS)]:
        assert ours[key] == official[key], key


def test_same_documents_and_split_as_sp1024(sp8192_dataset, default_dataset):
    a, b = sp8192_dataset.manifest, default_dataset.manifest
    assert a["doc_ids"] == b["doc_ids"]
    assert _val_texts(sp8192_dataset) == _val_texts(default_dataset)
    # A larger vocabulary spells the same text in fewer tokens.
    assert a["tokens"]["val"] < 0.75 * b["tokens"]["val"]


def test_val_reaches_the_top_ids(sp8192_dataset):
    """What the binding's sample rule relies on: BPE puts single characters at the top ids, so
    a real split's largest id lies in the upper half of the vocabulary."""
    tokens = np.asarray(read_shard(sp8192_dataset.data_path / "fineweb_val_000000.bin"))
    assert int(tokens.max()) >= 4096 and int(tokens.max()) < 8192


def test_tokenizer_training_is_deterministic(default_dataset):
    """Two trainings at vocabulary 8192 with our settings give the same bytes, so building at
    first use (instead of shipping the model) gives every machine the same tokenizer. The
    corpus here is the sp1024 shards decoded (the build's own inputs are deterministic: the
    sp1024 rebuild test of test_default_data)."""
    sp = spm.SentencePieceProcessor(model_file=str(default_dataset.tokenizer_path))
    tokens = np.asarray(read_shard(default_dataset.data_path / "fineweb_train_000000.bin")).astype(np.int64)
    texts = sp.decode([d[1:].tolist() for d in np.split(tokens, np.flatnonzero(tokens == 1))[1:]])
    first, second = (default_data.train_tokenizer(texts, 8192) for _ in range(2))
    assert spm.SentencePieceProcessor(model_proto=first).vocab_size() == 8192
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()
