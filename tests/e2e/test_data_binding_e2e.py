"""Through the real entry point: a tokenizer or vocab_size that did not make the shards stops the
run with one clear message before its first training step (harness.pipeline.data_binding)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm

from harness.pipeline.shards import read_shard
from tests.conftest import ROOT, write_tiny_submission

RUN_PY = ROOT / "harness" / "run.py"


@pytest.fixture(scope="module")
def other_tokenizer(default_dataset, tmp_path_factory):
    """1024 pieces trained here on the default corpus (decoded from its shards): not the shards' own."""
    sp = spm.SentencePieceProcessor(model_file=str(default_dataset.tokenizer_path))
    tokens = np.asarray(read_shard(default_dataset.data_path / "fineweb_train_000000.bin")).astype(np.int64)
    texts = sp.decode([d[1:].tolist() for d in np.split(tokens, np.flatnonzero(tokens == 1))[1:]])
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type="bpe",
        vocab_size=1024,
        byte_fallback=True,
        character_coverage=1.0,  # differs from the official 0.999: other pieces, same vocabulary size
        hard_vocab_limit=False,
        add_dummy_prefix=False,
        max_sentence_length=1 << 20,
        num_threads=1,
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("tok") / "other_1024.model"
    path.write_bytes(model.getvalue())
    return path


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["data.tokenizer_path={tok}"], "was tokenized by a tokenizer with sha256"),
        (["data.vocab_size=8192"], "choose the variant of your vocabulary"),
    ],
)
def test_mismatch_is_refused_before_training(tmp_path, default_dataset, other_tokenizer, sets, message):
    sub = write_tiny_submission(tmp_path / "tiny")
    argv = [a for s in sets for a in ("--set", s.format(tok=other_tokenizer))]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "RUN_ID")}
    env.update(OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(RUN_PY), str(sub), "--run-id", "r", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    log = (sub / "runs" / "r" / "train.log").read_text()
    assert "step:" not in log and not list((sub / "runs" / "r").glob("*.pgolf"))
