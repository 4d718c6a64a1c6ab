"""The ``adapter`` kind in the run configuration: overrides of its fields, switching it off,
refusing a non-Config, the chunk size check, older configs and checkpoints without the new
fields, and the bundle carrying the TTT walk only when a run has an adapter."""

from __future__ import annotations

import pytest

from harness.api.by_name import ADAPTATION_MODULE, modules_reached_by_name
from harness.api.config import EvalConfig, RunConfig, component_modules, resolve
from harness.api.errors import ConfigError
from harness.pipeline.checkpoint import config_differences
from harness.pipeline.plugin_manager import full_manager
from plugins.adapt.sgd_chunks import SgdChunksConfig
from plugins.arch.gpt import GPTConfig
from plugins.compress.zlib import ZlibConfig
from plugins.optim.muon import MuonConfig
from plugins.quant.int8 import Int8Config


def _config(adapter=None) -> RunConfig:
    return RunConfig(
        name="t",
        model=GPTConfig(num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2),
        optimizer=MuonConfig(),
        quantizer=Int8Config(),
        compressor=ZlibConfig(),
        eval=EvalConfig(adapter=adapter),
    )


def _resolve(config, sets=None, environ=None):
    return resolve(config, cuda=True, environ=environ or {}, sets=sets or {})


def test_adapter_fields_are_overridden_and_it_can_be_switched_off():
    with_ttt = _config(SgdChunksConfig())
    got = _resolve(
        with_ttt, {"eval.adapter.lr": "0", "eval.adapter.epochs": "1"}, {"TTT_CHUNK_TOKENS": "4096"}
    )
    assert got.eval.adapter == SgdChunksConfig(lr=0.0, epochs=1)
    assert got.eval.ttt_chunk_tokens == 4096
    assert _resolve(with_ttt, {"eval.adapter": "none"}).eval.adapter is None
    # what `pgolf verify` pins for a run without TTT (its config.json says null)
    assert (
        _resolve(_config(), {"eval.adapter": "None", "eval.ttt_chunk_tokens": "32768"}).eval.adapter is None
    )
    assert "plugins.adapt.sgd_chunks" in component_modules(with_ttt)
    assert "plugins.adapt.sgd_chunks" not in component_modules(_config())


def test_bad_adapter_settings_are_refused_with_the_key():
    with pytest.raises(ConfigError, match="eval.adapter: expected an adapter Config"):
        _resolve(_config(), {"eval.adapter": "sgd_chunks"})
    with pytest.raises(ConfigError, match="eval.adapter: expected an adapter Config"):
        _resolve(_config("sgd"))
    with pytest.raises(ConfigError, match="sgd_chunks.momentum: expected a float in"):
        _resolve(_config(SgdChunksConfig()), {"eval.adapter.momentum": "1.5"})
    with pytest.raises(ConfigError, match=r"eval.ttt_chunk_tokens=0: expected a positive integer"):
        _resolve(_config(), {"eval.ttt_chunk_tokens": "0"})


def test_the_adapter_kind_is_registered():
    registry = full_manager(entrypoints=False).registry
    assert registry.names("adapter") == ["sgd_chunks"]
    assert registry.name_of(SgdChunksConfig()) == "sgd_chunks"


def test_a_checkpoint_written_before_the_adapter_still_resumes():
    old = {"eval": {"eval_stride": 64}, "train": {"seed": 1}}
    now = {"eval": {"eval_stride": 64, "adapter": None, "ttt_chunk_tokens": 32768}, "train": {"seed": 1}}
    assert config_differences(old, now) == []
    changed = {"eval": {"eval_stride": 64, "adapter": None, "ttt_chunk_tokens": 4096}, "train": {"seed": 1}}
    assert config_differences(old, changed) == ["eval.ttt_chunk_tokens: 32768 -> 4096"]
    ttt = {"eval": {"eval_stride": 64, "adapter": {"_class": "x.Y", "lr": 0.1}}, "train": {"seed": 1}}
    assert config_differences(ttt, ttt) == []
    assert config_differences(old, ttt) == [
        "eval.adapter._class: '<absent>' -> 'x.Y'",
        "eval.adapter.lr: '<absent>' -> 0.1",
    ]


def test_only_runs_with_an_adapter_bundle_the_walk():
    assert modules_reached_by_name(_config()) == ()
    assert modules_reached_by_name(_config(adapter=SgdChunksConfig())) == (ADAPTATION_MODULE,)
