"""The pickle-free training checkpoint: exact round trips of nested state (optimizer,
averagers, RNG), strict validation of the file, config comparison for ``--resume``, and
the Trainer's checkpoint cadence on a fake clock (clock paused while saving)."""

from __future__ import annotations

import json
import math
import random
import struct
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from harness.api.config import RunConfig, TrainConfig
from harness.api.context import DistInfo, TrainContext
from harness.api.errors import ArtifactError, ConfigError
from harness.pipeline.checkpoint import (
    MAGIC,
    TrainingInterrupted,
    config_differences,
    decode_tree,
    encode_tree,
    read_checkpoint,
    read_checkpoint_meta,
    rng_state,
    set_rng_state,
    write_checkpoint,
)
from harness.pipeline.resume import TrainingCheckpoints
from harness.pipeline.runlog import RunLogger
from harness.pipeline.trainer import Trainer
from plugins.arch.gpt import GPTConfig
from plugins.averaging.ema import EMAConfig
from plugins.averaging.swa import SWAConfig
from plugins.optim.adamw import AdamWConfig
from plugins.optim.muon import MuonConfig

CPU = DistInfo(0, 1, 0, torch.device("cpu"), None)


def _tree() -> dict:
    return {
        "state": {
            0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(3, 4)},
            7: {"m": torch.randn(2, dtype=torch.bfloat16)},
        },
        "param_groups": [
            {"lr": 0.1, "betas": (0.9, 0.95), "params": [0, 7], "fused": None, "nesterov": True, "name": "x"}
        ],
        "flags": torch.tensor([True, False]),
        "ids": torch.arange(5, dtype=torch.int64),
        "empty": torch.empty(0, 3),
        "odd": [float("nan"), float("inf"), -float("inf"), 1e-310, 2**70],
    }


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (
            type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def test_nested_state_round_trips_exactly(tmp_path):
    tree = _tree()
    nodes, tensors = encode_tree(tree)
    json.dumps(nodes, allow_nan=False)  # the structure is plain JSON
    assert _equal(decode_tree(nodes, tensors), tree)
    size = write_checkpoint(tmp_path / "c.pgck", tree, {"step": 4})
    assert size == (tmp_path / "c.pgck").stat().st_size
    back, meta = read_checkpoint(tmp_path / "c.pgck")
    assert meta == {"step": 4} and read_checkpoint_meta(tmp_path / "c.pgck") == {"step": 4}
    assert _equal(back, tree)  # int keys, tuples, bf16/bool/int64, empty tensors, nan/inf, big ints


def test_unstorable_values_are_refused(tmp_path):
    with pytest.raises(ArtifactError, match=r"state\.f is a function"):
        write_checkpoint(tmp_path / "c.pgck", {"f": lambda: 0}, {})
    with pytest.raises(ArtifactError, match="key"):
        write_checkpoint(tmp_path / "c.pgck", {(1, 2): 0}, {})
    with pytest.raises(ArtifactError, match="complex"):
        write_checkpoint(tmp_path / "c.pgck", {"z": torch.zeros(2, dtype=torch.complex64)}, {})
    assert not (tmp_path / "c.pgck").exists()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda b: b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94." + b"\x00" * 40,
            "pickle/torch.save",
        ),  # a pickle
        (lambda b: b"PK\x03\x04" + b"\x00" * 60, "pickle/torch.save"),  # a torch.save zip
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "sha256 mismatch"),  # one body bit flipped
        (lambda b: b[:-10], "truncated or extended"),
        (lambda b: b[:30], "truncated"),
        (lambda b: b[:8] + struct.pack("<H", 9) + b[10:], "version 9"),
    ],
)
def test_bad_files_name_the_file(tmp_path, mutate, message):
    good = tmp_path / "good.pgck"
    write_checkpoint(good, {"w": torch.randn(8, 8)}, {"step": 1})
    bad = tmp_path / "bad.pgck"
    bad.write_bytes(mutate(good.read_bytes()))
    with pytest.raises(ArtifactError, match=message) as info:
        read_checkpoint(bad)
    assert str(bad) in str(info.value)


def test_header_fields_are_validated(tmp_path):
    path = tmp_path / "c.pgck"
    write_checkpoint(path, {"w": torch.ones(2, 2)}, {})
    blob = path.read_bytes()
    hlen = struct.unpack_from("<I", blob, 10)[0]
    header = json.loads(blob[14 : 14 + hlen])
    header["tensors"][0]["dtype"] = "object"
    text = json.dumps(header).encode()
    path.write_bytes(MAGIC + struct.pack("<HI", 1, len(text)) + text + blob[14 + hlen :])
    with pytest.raises(ArtifactError, match=r"tensors\[0\]: dtype 'object'"):
        read_checkpoint(path)


def _gpt():
    torch.manual_seed(0)
    return GPTConfig(num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2).build(128)


def _step(model, opt, step, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 128, (2, 16), generator=g)
    loss = torch.nn.functional.cross_entropy(model(x).float().reshape(-1, 128), x.roll(-1, 1).reshape(-1))
    loss.backward()
    opt.step(step, 0.7)
    opt.zero_grad()
    return loss.item()


@pytest.mark.parametrize("opt_cfg", [MuonConfig(), AdamWConfig()], ids=["muon", "adamw"])
def test_optimizer_state_through_a_file_continues_identically(tmp_path, opt_cfg):
    """Two steps, checkpoint, then step 3 on the original and on a rebuilt copy: same weights."""
    model = _gpt()
    opt = opt_cfg.build(model)
    for s in (1, 2):
        _step(model, opt, s, s)
    write_checkpoint(tmp_path / "c.pgck", {"model": dict(model.state_dict()), "opt": opt.state_dict()}, {})
    state, _ = read_checkpoint(tmp_path / "c.pgck")
    twin = _gpt()  # same init, then overwritten: only the file carries the trained state
    twin_opt = opt_cfg.build(twin)
    twin.load_state_dict(state["model"])
    twin_opt.load_state_dict(state["opt"])
    assert _step(model, opt, 3, 3) == _step(twin, twin_opt, 3, 3)
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@dataclass
class _Ctx:
    model: torch.nn.Module
    step: int = 0
    lr_scale: float = 0.1
    log: object = None
    averaging: str = None
    notes: dict = None


def test_averagers_state_round_trips(tmp_path):
    model = _gpt()
    log = RunLogger(tmp_path, echo=False)
    ctx = _Ctx(model=model, log=log, notes={})
    swa, ema = SWAConfig(every=1, start_frac=0.5).build(), EMAConfig(decay=0.5).build()
    ema.pg_train_start(ctx=ctx)
    for s in (1, 2, 3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * s)
        ctx.step = s
        swa.pg_step_end(ctx=ctx)
        ema.pg_step_end(ctx=ctx)
    write_checkpoint(tmp_path / "c.pgck", {"swa": swa.state_dict(), "ema": ema.state_dict()}, {})
    state, _ = read_checkpoint(tmp_path / "c.pgck")
    swa2, ema2 = SWAConfig(every=1, start_frac=0.5).build(), EMAConfig(decay=0.5).build()
    ema2.pg_train_start(ctx=ctx)
    swa2.pg_train_start(ctx=ctx)
    swa2.load_state_dict(state["swa"])
    ema2.load_state_dict(state["ema"])
    assert swa2.count == swa.count == 3 and ema2.updates == ema.updates == 3
    assert all(torch.equal(a, b) for a, b in zip(swa.sums, swa2.sums, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(ema.shadow, ema2.shadow, strict=True))
    assert swa2.tensors[0] is swa.tensors[0]  # it tracks the live model tensors again
    log.close()


def test_rng_state_round_trips():
    state = rng_state(torch.device("cpu"))
    draws = (random.random(), float(np.random.rand()), torch.rand(3))
    nodes, tensors = encode_tree(state)
    set_rng_state(decode_tree(json.loads(json.dumps(nodes)), tensors), torch.device("cpu"))
    again = (random.random(), float(np.random.rand()), torch.rand(3))
    assert draws[:2] == again[:2] and torch.equal(draws[2], again[2])


def test_config_differences_list_fields_and_allow_checkpoint_settings():
    a = {"train": {"seed": 1, "checkpoint_every_minutes": 5.0, "stop_after_step": 3}, "model": {"dim": 64}}
    b = {
        "train": {"seed": 2, "checkpoint_every_minutes": 0.0, "stop_after_step": 0},
        "model": {"dim": 64, "new": 1},
    }
    assert config_differences(a, b) == ["model.new: '<absent>' -> 1", "train.seed: 1 -> 2"]


# ---------------------------------------------------------------- the Trainer's cadence


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _Loader:
    def __init__(self) -> None:
        self.calls = 0

    def next_batch(self, *_):
        self.calls += 1
        x = torch.randint(0, 16, (2, 8), generator=torch.Generator().manual_seed(self.calls))
        return x, x.roll(-1, 1)

    def reset(self, state=None) -> None:
        self.calls = 0 if state is None else state["calls"]

    def state(self):
        return {"calls": self.calls}


class _Opt:
    def __init__(self, model):
        self.sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def zero_grad(self):
        self.sgd.zero_grad(set_to_none=True)

    def step(self, step, scale):
        self.sgd.step()

    def state_dict(self):
        return self.sgd.state_dict()

    def load_state_dict(self, s):
        self.sgd.load_state_dict(s)


class _Hooks:
    def pg_step_end(self, ctx):
        pass


@dataclass(frozen=True, kw_only=True)
class _Cfg:
    def build(self):  # pragma: no cover
        raise AssertionError


def _trainer(tmp_path, clock, **train):
    cfg = RunConfig(
        name="t",
        model=_Cfg(),
        optimizer=_Cfg(),
        quantizer=_Cfg(),
        compressor=_Cfg(),
        train=TrainConfig(
            iterations=10,
            max_wallclock_seconds=0.0,
            val_loss_every=0,
            warmup_steps=0,
            train_batch_tokens=16,
            train_seq_len=8,
            grad_accum_steps=1,
            warmdown_iters=0,
            **train,
        ),
    )
    tmp_path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = torch.nn.Embedding(16, 16)
    ctx = TrainContext(
        config=cfg,
        model=model,
        optimizer=_Opt(model),
        log=RunLogger(tmp_path, echo=False),
        dist=CPU,
        autocast_dtype=None,
        run_dir=tmp_path,
    )
    loader = _Loader()
    ckpt = TrainingCheckpoints(tmp_path, cfg, CPU, loader=loader, observers=[])
    trainer = Trainer(
        ctx,
        train_model=model,
        loader=loader,
        validate=lambda: {"val_loss": 1.0, "val_bpb": 1.0},
        hooks=_Hooks(),
        clock=clock,
        checkpointer=ckpt,
    )
    step_fn = trainer._train_step

    def timed_step(step, scale):  # every step costs 1 s of the fake clock
        clock.t += 1.0
        return step_fn(step, scale)

    trainer._train_step = timed_step
    return trainer, ctx, ckpt


def test_checkpoints_every_n_minutes_with_the_clock_paused(tmp_path, monkeypatch):
    clock = _Clock()
    trainer, ctx, ckpt = _trainer(
        tmp_path, clock, checkpoint_every_minutes=2.5 / 60
    )  # every 2.5 s of training
    saved = []
    real_save = ckpt.save

    def save(ctx_, state):
        clock.t += 100.0  # a slow save must not count as training time
        saved.append((state["step"], state["train_ms"]))
        return real_save(ctx_, state)

    monkeypatch.setattr(ckpt, "save", save)
    result = trainer.run()
    ctx.log.close()
    assert [s for s, _ in saved] == [3, 6, 9, 10]  # after 3, 6 and 9 s of training, and at the end
    assert [ms for _, ms in saved] == [3000.0, 6000.0, 9000.0, 10000.0]
    assert result.train_time_ms == 10000.0
    assert read_checkpoint_meta(tmp_path / "checkpoint.pgck")["step"] == 10
    assert (tmp_path / "train.log").read_text().count("checkpoint: step:") == 4


def test_stop_after_step_then_resume_gives_the_same_weights(tmp_path):
    full, ctx_full, _ = _trainer(tmp_path / "a", _Clock())
    full.run()
    stopped, ctx_b, _ = _trainer(tmp_path / "b", _Clock(), stop_after_step=4)
    with pytest.raises(TrainingInterrupted, match="after step 4"):
        stopped.run()
    resumed, ctx_c, ckpt = _trainer(tmp_path / "b", _Clock(), stop_after_step=0)
    start = ckpt.load(ctx_c)
    assert start["step"] == 4 and start["train_ms"] == 4000.0
    result = resumed.run(resume=start)
    assert result.steps == 10 and result.train_time_ms == 10000.0
    assert torch.equal(ctx_full.model.weight, ctx_c.model.weight)


def test_resume_refuses_a_different_run(tmp_path):
    stopped, _, _ = _trainer(tmp_path, _Clock(), stop_after_step=2)
    with pytest.raises(TrainingInterrupted):
        stopped.run()
    _, ctx, ckpt = _trainer(tmp_path, _Clock(), seed=5)
    with pytest.raises(ConfigError, match=r"train\.seed: 1337 -> 5"):
        ckpt.load(ctx)


@pytest.mark.parametrize(
    "field, value",
    [("checkpoint_every_minutes", -1.0), ("checkpoint_every_minutes", float("nan")), ("stop_after_step", -2)],
)
def test_bad_checkpoint_settings(tmp_path, field, value):
    with pytest.raises(ConfigError, match=f"train.{field}"):
        _trainer(tmp_path, _Clock(), **{field: value})


# The one exception: `pgolf import` must read upstream's torch.save files (issue 16), and does
# so with an Unpickler subclass whose find_class answers from a fixed allow-list of stand-ins
# and never imports (tests/unit/test_upstream_pickle.py, tests/fuzz/test_fuzz_upstream_pickle.py).
RESTRICTED_UNPICKLERS = {"harness/tools/upstream_pickle.py": "pickle"}


def test_no_loader_unpickles():
    """Artifact, checkpoint and shard loaders never use pickle (nor torch.load / np.load)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = []
    for path in sorted((root / "harness").rglob("*.py")) + sorted((root / "plugins").rglob("*.py")):
        allowed = RESTRICTED_UNPICKLERS.get(path.relative_to(root).as_posix())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("load", "save")
                and getattr(node.value, "id", "") in ("torch", "np", "numpy")
            ):
                names.append(f"{node.value.id}.{node.attr}")
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                names.append("allow_pickle")
            found += [
                f"{path.relative_to(root)}: {n}"
                for n in names
                if (n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib") and n != allowed)
                or n in ("torch.load", "torch.save", "np.load", "numpy.load", "allow_pickle")
            ]
    assert found == []


def test_the_restricted_unpickler_never_defers_to_pickles_own_lookup():
    """The allowed module never calls the base class's find_class (which imports anything)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for rel in RESTRICTED_UNPICKLERS:
        text = (root / rel).read_text(encoding="utf-8")
        assert "super().find_class" not in text and "Unpickler.find_class" not in text
        assert "pickle.load" not in text and "pickle.loads" not in text
