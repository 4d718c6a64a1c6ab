"""Magnitude pruning: exact counts, which tensors qualify, the no-op, the log line and report.

References: the count of a linear-interpolated quantile worked out by hand, ``torch.sort``
and ``torch.quantile`` for the entries that must go, and a real pluggy manager + RunLogger.
"""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
import torch

import plugins.algorithms.prune as prune_plugin
from harness.api.errors import ConfigError
from harness.api.registry import Registry
from harness.pipeline.plugin_manager import PluginManager
from harness.pipeline.runlog import RunLogger
from plugins.algorithms.prune import PruneConfig, prune_tensor


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_exact_count_and_exactly_the_smallest_entries() -> None:
    w = torch.randn(300, 256, generator=_gen(0))  # 76,800 distinct values
    before = w.clone()
    # rank = 0.03 * 76,799 = 2303.97, so the threshold lies strictly between the 2304th and
    # 2305th smallest |w|: exactly 2,304 entries are below it.
    assert prune_tensor(w, 0.03) == 2304
    order = before.abs().reshape(-1).argsort()
    flat = w.reshape(-1)
    assert bool((flat[order[:2304]] == 0).all())
    assert torch.equal(flat[order[2304:]], before.reshape(-1)[order[2304:]])
    assert float(before.abs().reshape(-1)[order[2304]]) >= float(torch.quantile(before.abs(), 0.03))


def test_only_large_2d_float_tensors_are_pruned() -> None:
    g = _gen(1)
    sd = {
        "tok_emb.weight": torch.randn(300, 256, generator=g).bfloat16(),  # pruned, as T1 does
        "blocks.0.mlp.fc.weight": torch.randn(300, 256, generator=g),  # pruned
        "bigram.proj.weight": torch.randn(512, 128, generator=g),  # exactly 65,536: kept
        "flat": torch.randn(70_000, generator=g),  # 1-D: kept
        "cube": torch.randn(2, 300, 256, generator=g),  # 3-D: kept
        "ids": torch.randint(-100, 100, (300, 256), generator=g),  # not float: kept
    }
    before = {k: v.clone() for k, v in sd.items()}
    pruner = PruneConfig().build()
    ctx = SimpleNamespace(log=RunLogger(None, echo=False))
    pruner.pg_before_quantize(ctx=ctx, state_dict=sd)
    for name in ("bigram.proj.weight", "flat", "cube", "ids"):
        assert torch.equal(sd[name], before[name]), name
    for name in ("tok_emb.weight", "blocks.0.mlp.fc.weight"):
        # T1's statement: threshold = torch.quantile(|w| in fp32, 0.03); zero |w| < threshold,
        # where torch compares a bf16 table against the 0-d fp32 threshold in bf16.
        threshold = torch.quantile(before[name].abs().float().flatten(), 0.03)
        expected = before[name].masked_fill(before[name].abs() < threshold, 0)
        assert sd[name].dtype == before[name].dtype and torch.equal(sd[name], expected), name
    assert pruner.tensors == 2


def test_fraction_zero_is_an_exact_no_op() -> None:
    g = _gen(2)
    sd = {"w": torch.randn(300, 256, generator=g), "e": torch.randn(300, 300, generator=g).bfloat16()}
    sd["w"][0, :10] = 0  # zeros already present stay as they are
    before = {k: v.clone() for k, v in sd.items()}
    pruner = PruneConfig(fraction=0.0).build()
    pruner.pg_before_quantize(ctx=SimpleNamespace(log=RunLogger(None, echo=False)), state_dict=sd)
    assert all(torch.equal(sd[k], before[k]) for k in sd)
    assert pruner.zeroed == 0


def test_log_line_and_report_through_the_plugin_manager(tmp_path) -> None:
    g = _gen(3)
    sd = {"a.weight": torch.randn(300, 256, generator=g), "b.weight": torch.randn(400, 200, generator=g)}
    stream = io.StringIO()
    log = RunLogger(tmp_path, stream=stream)
    manager = PluginManager()
    manager.register_object(PruneConfig().build(), name="prune")
    ctx = SimpleNamespace(log=log)
    manager.hook.pg_before_quantize(ctx=ctx, state_dict=sd)
    # 300x256: 2,304 (see above). 400x200 = 80,000: rank 0.03 * 79,999 = 2399.97 -> 2,400.
    assert stream.getvalue().strip() == "prune:fraction:0.03 tensors:2 zeroed:4704"
    assert (tmp_path / "train.log").read_text().strip() == "prune:fraction:0.03 tensors:2 zeroed:4704"
    event = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert event["event"] == "prune" and event["zeroed"] == 4704
    record: dict = {}
    manager.hook.pg_report(ctx=ctx, record=record)
    assert record == {"pruned_fraction": 0.03, "pruned_weights": 4704}


def test_report_before_any_pruning_says_none() -> None:
    record: dict = {}
    PruneConfig().build().pg_report(ctx=None, record=record)
    assert record == {"pruned_fraction": 0.03, "pruned_weights": None}


@pytest.mark.parametrize(
    ("field", "value"),
    [("fraction", -0.1), ("fraction", 1.0), ("fraction", "3%"), ("min_numel", -1), ("min_numel", 2.5)],
)
def test_invalid_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        PruneConfig(**{field: value})


def test_registers_as_an_algorithm() -> None:
    registry = Registry()
    prune_plugin.pg_register_components(registry=registry)
    assert registry.names("algorithm") == ["prune"]
    assert registry.get("algorithm", "prune").config_cls is PruneConfig
