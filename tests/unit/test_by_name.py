"""Modules a configuration imports by name (harness.api.by_name): what a bundle embeds for it."""

from __future__ import annotations

import dataclasses

import pytest

from harness.api.by_name import ADAPTATION_MODULE, import_by_name, modules_reached_by_name
from harness.api.config import EvalConfig, RunConfig
from harness.api.errors import ConfigError
from plugins.adapt.sgd_chunks import SgdChunksConfig
from plugins.arch.gpt import CLIP_ORDER_MODULE, GPTConfig
from plugins.compress.zlib import ZlibConfig
from plugins.optim.muon import MuonConfig
from plugins.quant.int8 import Int8Config


@dataclasses.dataclass(frozen=True)
class _Variant:
    """A component config whose resolved value picks a module."""

    fast: bool = False
    slot: str = "variant"

    def modules_by_name(self) -> tuple[str, ...]:
        return ("json.decoder",) if self.fast else ()

    def build(self, *args):  # never called here: only the configuration is walked
        raise AssertionError("not built")


@dataclasses.dataclass(frozen=True)
class _Broken:
    def modules_by_name(self):
        return ["json"]


def _config(components=(), adapter=None, plugins=()) -> RunConfig:
    return RunConfig(
        name="t",
        model=GPTConfig(num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, components=components),
        optimizer=MuonConfig(),
        quantizer=Int8Config(),
        compressor=ZlibConfig(),
        eval=EvalConfig(adapter=adapter),
        plugins=plugins,
    )


def test_only_the_resolved_values_that_ask_for_a_module_reach_it():
    assert modules_reached_by_name(_config()) == ()
    # A GPT with components names its upstream clip order (plugins.arch.upstream_clip_order).
    assert modules_reached_by_name(_config(components=(_Variant(fast=False),))) == (CLIP_ORDER_MODULE,)
    assert modules_reached_by_name(_config(plugins=(_Variant(fast=False),))) == ()
    # Nested two levels down (RunConfig -> GPTConfig.components), named once however often asked.
    both = _config(
        components=(_Variant(fast=True),), adapter=SgdChunksConfig(), plugins=(_Variant(fast=True),)
    )
    assert modules_reached_by_name(both) == (ADAPTATION_MODULE, CLIP_ORDER_MODULE, "json.decoder")
    assert import_by_name("json.decoder").__name__ == "json.decoder"


def test_a_declaration_that_is_not_a_tuple_of_names_is_refused_by_class():
    with pytest.raises(ConfigError, match=r"_Broken.modules_by_name\(\) must return a tuple"):
        modules_reached_by_name(_config(plugins=(_Broken(),)))
