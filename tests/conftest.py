"""Shared fixtures: the built-in default dataset (built once per session into a temporary
cache), a tiny CPU submission (2 layers x 64 wide), and the path to ../shared/data."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (official tokenizers, real records); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pgolf_cache(tmp_path_factory) -> Path:
    """A session-wide cache folder, exported as PGOLF_CACHE_DIR (subprocesses inherit it)."""
    root = Path(os.environ.get("PGOLF_TEST_CACHE_DIR") or tmp_path_factory.mktemp("pgolf_cache"))
    previous = os.environ.get("PGOLF_CACHE_DIR")
    os.environ["PGOLF_CACHE_DIR"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("PGOLF_CACHE_DIR", None)
    else:
        os.environ["PGOLF_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def default_dataset(pgolf_cache):
    """The built-in default dataset, built once per test session."""
    from harness.datasets.default import ensure_default_dataset

    return ensure_default_dataset(progress=False)


TINY_SUBMISSION = '''
"""A tiny CPU submission for the tests: the baseline's components at 2 layers x 64 wide."""

from __future__ import annotations

from harness.api.config import EvalConfig, RunConfig, TrainConfig
from harness.pipeline.runner import run
from plugins.arch.gpt import GPTConfig
from plugins.compress.zlib import ZlibConfig
from plugins.optim.muon import MuonConfig
from plugins.quant.int8 import Int8Config


def build_config() -> RunConfig:
    return RunConfig(
        name="tiny",
        author="tests",
        model=GPTConfig(num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2),
        optimizer=MuonConfig(),
        quantizer=Int8Config(),
        compressor=ZlibConfig(level=9),
        train=TrainConfig(iterations=6, train_batch_tokens=1024, train_seq_len=128,
                          grad_accum_steps=GRAD_ACCUM, warmup_steps=2, warmdown_iters=3,
                          train_log_every=1, val_loss_every=3, max_wallclock_seconds=600.0),
        eval=EvalConfig(val_batch_size=1024, val_max_tokens=1024, eval_stride=64, eval_batch_seqs=8),
        cpu_profile={},
    )


if __name__ == "__main__":
    run(build_config())
'''


def write_tiny_submission(folder: Path, grad_accum: int = 1) -> Path:
    """Write the tiny submission into ``folder`` and return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_gpt.py").write_text(
        textwrap.dedent(TINY_SUBMISSION).replace("GRAD_ACCUM", str(grad_accum)), encoding="utf-8"
    )
    return folder


@pytest.fixture
def tiny_submission(tmp_path) -> Path:
    """A folder holding the tiny submission's train_gpt.py."""
    return write_tiny_submission(tmp_path / "tiny")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skip them (with the reason) where there is none. Tests
    marked ``slow`` run only when asked for (``-m slow``), so the default suite stays within its
    10 minutes on 2 CPU cores."""
    skips = []
    if not torch.cuda.is_available():
        skips.append(("gpu", pytest.mark.skip(reason="needs a CUDA device (marker: gpu)")))
    if "slow" not in (config.getoption("-m") or ""):
        skips.append(("slow", pytest.mark.skip(reason="opt-in: select it with -m slow")))
    for item in items:
        for marker, skip in skips:
            if marker in item.keywords:
                item.add_marker(skip)
