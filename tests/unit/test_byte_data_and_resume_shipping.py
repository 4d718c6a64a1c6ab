"""The byte-level data path (harness.pipeline.byte_data) and the checkpoint/resume side of a run
(harness.pipeline.resume) ship only with the runs that use them (pgolf issue 13): which data
configs reach the byte module, which bundles embed it, which definitions a token-model bundle no
longer carries, and that a file without those modules still reads token data and refuses byte
data or a resume with an error naming what it lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.api.by_name import BYTE_DATA_MODULE, modules_reached_by_name
from harness.api.config import DataConfig, RunConfig
from harness.api.errors import ConfigError, DataError
from harness.pipeline import setup
from harness.pipeline.bpb import build_byte_luts
from harness.pipeline.byte_spec import write_byte_tokenizer_spec
from harness.tools import bundle
from harness.tools.bundle_report import default_extra_modules
from plugins.arch.gpt import GPTConfig
from plugins.compress.zlib import ZlibConfig
from plugins.optim.muon import MuonConfig
from plugins.quant.int8 import Int8Config
from tests.unit.not_bundled import leave_out

ROOT = Path(__file__).resolve().parents[2]
SP1024 = ROOT.parent / "shared" / "data" / "tokenizers" / "fineweb_1024_bpe.model"
RESUME_MODULES = ("harness.pipeline.resume", "harness.pipeline.checkpoint")


def _reaches_byte_data(data: DataConfig) -> bool:
    config = RunConfig(
        name="t",
        model=GPTConfig(),
        optimizer=MuonConfig(),
        quantizer=Int8Config(),
        compressor=ZlibConfig(),
        data=data,
    )
    return BYTE_DATA_MODULE in modules_reached_by_name(config)


def test_only_byte_level_data_reaches_the_byte_module():
    assert not _reaches_byte_data(DataConfig())
    assert not _reaches_byte_data(DataConfig(vocab_size=8192, default_variant="sp8192"))
    assert _reaches_byte_data(DataConfig(vocab_size=256, default_variant="bytes"))
    # DATA_PATH and TOKENIZER_PATH naming byte shards and their spec: only the vocabulary tells.
    assert _reaches_byte_data(
        DataConfig(data_path="shards", tokenizer_path="shards/tokenizer.json", vocab_size=256)
    )
    # The byte variant under a wrong vocabulary is found there first, then refused for it.
    assert _reaches_byte_data(DataConfig(default_variant="bytes"))


@pytest.mark.parametrize(
    ("submission", "byte_level"),
    [
        ("baseline", False),
        ("12L_recycled", False),
        ("sp8192_recur_ttt", False),
        ("byte_gpt", True),
        ("conv_moe", True),
    ],
)
def test_a_bundle_embeds_the_byte_module_only_for_byte_data_and_never_resume(submission, byte_level):
    folder = ROOT / "submissions" / submission
    modules = bundle.collect_modules(folder / "train_gpt.py", ROOT, extra=default_extra_modules(folder))
    assert "harness.pipeline.bpb" in modules and "harness.pipeline.trainer" in modules  # the walk got there
    assert (BYTE_DATA_MODULE in modules) == byte_level
    assert not set(RESUME_MODULES) & set(modules)


def test_a_token_model_bundle_ships_no_byte_spec_reader_nor_checkpoint_cadence(tmp_path):
    folder = ROOT / "submissions" / "baseline"
    shipped = bundle.bundle_submission(
        folder, tmp_path / "train_gpt.py", minify=True, extra_modules=default_extra_modules(folder)
    )
    text = shipped.path.read_text(encoding="utf-8")
    # What every run calls is there (the pruned, minified form keeps top-level names)...
    for kept in ("def build_byte_luts", "def looks_like_byte_spec", "def find_prepared", "class Trainer"):
        assert kept in text, kept
    # ...and the byte-level and checkpoint-only definitions are not.
    for gone in (
        "def read_byte_tokenizer_spec",
        "def default_bytes_dataset_dir",
        "def is_bytes_complete",
        "def load_prepared_bytes",
        "def byte_spec_luts",
        "class TrainingCheckpoints",
        "def resume_run_dir",
        "def checkpoint_every_ms",
        "def _ctrl_c_agreed",
    ):
        assert gone not in text, gone


def test_without_the_byte_module_token_tables_build_and_a_byte_spec_names_it(tmp_path, monkeypatch):
    spec = write_byte_tokenizer_spec(tmp_path)
    assert build_byte_luts(spec, 256).base_bytes.tolist() == [1] * 256  # from the repository
    leave_out(monkeypatch, BYTE_DATA_MODULE)
    with pytest.raises(ModuleNotFoundError, match=r"harness\.pipeline\.byte_data' was not bundled"):
        build_byte_luts(spec, 256)
    missing = tmp_path / "nope.model"  # not a file: never taken for a spec, refused as before
    with pytest.raises(DataError, match="nope.model.*does not exist"):
        build_byte_luts(missing, 1024)
    if not SP1024.is_file():
        pytest.skip(f"official tokenizer {SP1024} not found (shared reference data absent)")
    luts = build_byte_luts(SP1024, 1024)  # a SentencePiece model never reaches the byte module
    assert luts.vocab_size == 1024 and int(luts.base_bytes.max()) > 1


def test_without_the_resume_module_checkpointing_is_a_clear_error(monkeypatch):
    leave_out(monkeypatch, "harness.pipeline.resume")
    with pytest.raises(ConfigError, match="run the submission from the repository"):
        setup.checkpoint_module()
