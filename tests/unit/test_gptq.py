"""The GPTQ + SDClip quantizer (plugins/quant/gptq.py) and the train-only calibration data
(harness/pipeline/calibration.py), checked against hand computations and an independent,
unblocked form of GPTQ; and, at run level, that the export calibrates on training tokens only."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.api.by_name import CALIBRATION_MODULE
from harness.api.config import DataConfig, EvalConfig, RunConfig, TrainConfig, component_modules
from harness.api.context import DistInfo, TrainContext
from harness.api.errors import ConfigError, DataError
from harness.api.protocols import CalibratedQuantizer
from harness.pipeline import export as export_phase
from harness.pipeline.artifact import load_state_dict
from harness.pipeline.calibration import TrainCalibration
from harness.pipeline.plugin_manager import run_manager
from harness.pipeline.runlog import RunLogger
from harness.pipeline.setup import DataPaths, RunState
from harness.pipeline.shards import write_shard
from plugins.arch.gpt import GPTConfig
from plugins.compress.zlib import ZlibConfig
from plugins.optim.muon import MuonConfig
from plugins.quant.gptq import GPTQConfig, gptq_quantize, sdclip_steps
from plugins.quant.int8 import Int8Config
from tests.conformance.test_components import REGISTRY, tiny_arch_config
from tests.unit.not_bundled import leave_out

TRAIN_IDS, VOCAB = 32, 64  # train shards hold ids 0..31, validation shards 32..63


def _correlated(n: int, cols: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.eye(cols) + 2 * torch.randn(cols, cols, generator=g) / cols**0.5
    return torch.randn(n, cols, generator=g) @ mix


def _obs_reference(w: torch.Tensor, h: torch.Tensor, step: torch.Tensor, c: int, order: torch.Tensor):
    """GPTQ as the paper first states it (Optimal Brain Surgeon updates, one column at a time,
    the inverse Hessian shrunk explicitly after each column), no Cholesky and no blocks."""
    W = w.double().clone()[:, order]
    H = h.double().clone()[order][:, order]
    H += 0.01 * H.diagonal().mean() * torch.eye(H.shape[0], dtype=H.dtype)
    Hinv = torch.linalg.inv(H)
    s = step.double()[:, None]
    Q = torch.zeros_like(W)
    for j in range(W.shape[1]):
        Q[:, j] = torch.round(W[:, j] / s[:, 0]).clamp(-c, c)
        err = (W[:, j] - Q[:, j] * s[:, 0]) / Hinv[j, j]
        W[:, j:] -= err[:, None] * Hinv[j, j:][None, :]
        Hinv = Hinv - Hinv[:, j : j + 1] @ Hinv[j : j + 1, :] / Hinv[j, j]
    return Q[:, torch.argsort(order)].to(torch.int8)


def test_sdclip_step_is_k_times_row_std_over_the_top_level():
    w = torch.tensor([[0.1, -0.2, 0.3, 0.05], [1.0, 2.0, -1.5, 0.5], [0.0, 0.0, 0.0, 0.0]])
    steps = sdclip_steps(w, 12.85, 6)
    assert steps.dtype == torch.float16
    for r in range(2):
        by_hand = 12.85 * statistics.stdev(w[r].tolist()) / 31  # unbiased std, c = 2**5 - 1
        assert steps[r].item() == pytest.approx(by_hand, rel=1e-3)  # fp16 keeps ~3 digits
    assert steps[2].item() == 2.0**-14  # a constant row gets the smallest normal fp16, not 0
    assert sdclip_steps(w[:2], 20.0, 8)[1].item() == pytest.approx(
        20.0 * statistics.stdev(w[1].tolist()) / 127, rel=1e-3
    )


def test_gptq_has_lower_output_error_than_rounding_with_the_same_clip():
    X = _correlated(2048, 96, seed=1)
    W = torch.randn(48, 96, generator=torch.Generator().manual_seed(2)) * 0.05
    step = sdclip_steps(W, 12.85, 6)

    def output_error(q):
        return (X @ W.T - X @ (q.float() * step.float()[:, None]).T).norm().item()

    rtn = torch.round(W / step.float()[:, None]).clamp(-31, 31).to(torch.int8)
    gptq = gptq_quantize(W, X.T @ X, step, 6, block_size=32)
    assert torch.equal(gptq_quantize(W, None, step, 6), rtn)  # no Hessian: round to nearest
    assert output_error(gptq) < 0.8 * output_error(rtn)  # measured: 0.69x


@pytest.mark.parametrize("act_order", [False, True])
def test_blocked_cholesky_gptq_matches_the_sequential_obs_form(act_order):
    X = _correlated(1024, 40, seed=3)
    H = X.T @ X
    W = torch.randn(16, 40, generator=torch.Generator().manual_seed(4)) * 0.05
    step = sdclip_steps(W, 12.85, 6)
    order = torch.argsort(H.diagonal(), descending=True) if act_order else torch.arange(40)
    ref = _obs_reference(W, H, step, 31, order)
    for block in (1, 7, 128):
        q = gptq_quantize(W, H, step, 6, block_size=block, act_order=act_order)
        # Equal but for rounding ties flipped by float noise (float32 here, float64 there).
        assert (q != ref).float().mean().item() <= 0.01, block
        assert (q.int() - ref.int()).abs().max().item() <= 1


def test_identity_hessian_is_round_to_nearest_and_dead_inputs_get_zero_weight():
    W = torch.randn(8, 12, generator=torch.Generator().manual_seed(5))
    step = sdclip_steps(W, 12.85, 6)
    rtn = gptq_quantize(W, None, step, 6)
    assert torch.equal(gptq_quantize(W, torch.eye(12), step, 6, block_size=5), rtn)
    H = torch.eye(12)
    H[3, 3] = 0.0  # input 3 never fired during calibration
    q = gptq_quantize(W, H, step, 6)
    assert torch.all(q[:, 3] == 0) and torch.equal(q[:, :3], rtn[:, :3])


def test_quantize_routes_int6_int8_fp16_and_roundtrips_shapes_and_dtypes():
    g = torch.Generator().manual_seed(6)
    state = {
        "blocks.0.mlp.fc.weight": torch.randn(512, 160, generator=g) * 0.05,
        "tok_emb.weight": (torch.randn(520, 128, generator=g) * 0.02).to(torch.bfloat16),
        "blocks.0.attn_scale": torch.ones(64),
        "step_count": torch.tensor(7),
    }
    quant = GPTQConfig().build()
    packed = quant.quantize(state)
    mat, emb = packed["blocks.0.mlp.fc.weight"], packed["tok_emb.weight"]
    assert (mat.kind, mat.meta["bits"], mat.meta["hessian"]) == ("intn", 6, False)
    assert mat.arrays["q"].dtype == torch.int8 and mat.arrays["q"].abs().max().item() <= 31
    assert mat.arrays["scale"].dtype == torch.float16 and mat.arrays["scale"].shape == (512,)
    assert (emb.kind, emb.meta["bits"]) == ("intn", 8) and emb.arrays["q"].abs().max().item() <= 127
    # The embedding's clip is 20 sigmas over 127 levels, the matrix's 12.85 over 31.
    emb_std = state["tok_emb.weight"].float()[0].std().item()
    assert emb.arrays["scale"][0].item() == pytest.approx(20.0 * emb_std / 127, rel=1e-3)
    assert packed["blocks.0.attn_scale"].arrays["w"].dtype == torch.float16
    assert torch.equal(packed["step_count"].arrays["w"], state["step_count"])
    back = quant.dequantize(packed)
    for name, t in state.items():
        assert back[name].shape == t.shape and back[name].dtype == t.dtype, name
    err = (back["blocks.0.mlp.fc.weight"] - state["blocks.0.mlp.fc.weight"]).abs()
    assert err.max().item() <= 0.5 * mat.arrays["scale"].float().max().item() + 1e-6
    packed_q = GPTQConfig(packed=True).build().quantize(state)["blocks.0.mlp.fc.weight"]
    assert packed_q.kind == "intn_packed" and packed_q.arrays["q"].numel() == 512 * 160 * 6 // 8


def test_quantize_refuses_a_hessian_of_the_wrong_size():
    quant = GPTQConfig(passthrough_max_numel=0).build()
    quant.hessians = {"w": torch.eye(5)}
    with pytest.raises(ConfigError, match="Hessian of w"):
        quant.quantize({"w": torch.randn(4, 6)})


@pytest.mark.parametrize(
    "field,value", [("bits", 9), ("clip_sigmas", 0.0), ("damping", -1.0), ("block_size", 0), ("act_order", 1)]
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=field):
        GPTQConfig(**{field: value})


class _FixedBatches:
    """A CalibrationData stand-in serving given batches (train split only)."""

    def __init__(self, batches):
        self._batches = batches

    def batches(self, count, *, split="train"):
        assert split == "train"
        return iter(self._batches[:count])


def _tiny_gpt():
    torch.manual_seed(0)
    return GPTConfig(num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2).build(VOCAB)


def test_calibrate_collects_the_mean_gram_matrix_of_each_quantized_input():
    model = _tiny_gpt().eval()
    g = torch.Generator().manual_seed(7)
    batches = [torch.randint(0, VOCAB, (2, 16), generator=g) for _ in range(3)]
    quant = GPTQConfig(passthrough_max_numel=1024, calibration_batches=3).build()
    assert isinstance(quant, CalibratedQuantizer)
    assert not isinstance(Int8Config().build(), CalibratedQuantizer)
    with torch.no_grad():
        line = quant.calibrate(model, _FixedBatches(batches))
        hidden = [model.hidden(b).reshape(-1, 64) for b in batches]
    assert "head:tok_emb.weight" in line
    expected_head = sum(h.T @ h for h in hidden) / 3
    assert torch.allclose(quant.hessians["tok_emb.weight"], expected_head, rtol=1e-4, atol=1e-4)
    linear = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linear and linear <= set(quant.hessians)
    for name in linear:
        h, cols = quant.hessians[name], model.state_dict()[name].shape[1]
        assert h.shape == (cols, cols) and torch.allclose(h, h.T, atol=1e-4)
        assert torch.linalg.eigvalsh(h.double()).min().item() > -1e-3  # a Gram matrix is PSD
    out = quant.quantize({k: v.detach() for k, v in model.state_dict().items()})
    assert all(out[name].meta["hessian"] for name in linear | {"tok_emb.weight"})


@pytest.mark.parametrize("arch", ["gpt", "conv_moe"])
def test_architectures_calibrate_quantize_and_load_back(arch):
    """Layers GPTQ cannot see as nn.Linear (convolutions) fall back to SDClip rounding.
    (byte_gpt has no tiny shape here: GPTQ over its default size takes minutes on a CPU.)"""
    torch.manual_seed(0)
    model = tiny_arch_config(REGISTRY.get("arch", arch).config_cls).build(VOCAB).eval()
    g = torch.Generator().manual_seed(8)
    quant = GPTQConfig(passthrough_max_numel=256, calibration_batches=2).build()
    with torch.no_grad():
        quant.calibrate(model, _FixedBatches([torch.randint(0, VOCAB, (2, 32), generator=g)] * 2))
    packed = quant.quantize({k: v.detach() for k, v in model.state_dict().items()})
    model.load_state_dict(quant.dequantize(packed), strict=True)
    with_hessian = {n for n, q in packed.items() if q.meta.get("hessian")}
    linear = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert {n for n in linear if packed[n].kind == "intn"} <= with_hessian


def _write_split_shards(folder: Path) -> Path:
    """Train shards with ids < 32 only, validation shards with ids >= 32 only."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate((3000, 50, 2000)):  # the 50-token shard is shorter than a window
        write_shard(folder / f"fineweb_train_{i:06d}.bin", rng.integers(0, TRAIN_IDS, n), VOCAB)
    write_shard(folder / "fineweb_val_000000.bin", rng.integers(TRAIN_IDS, VOCAB, 4000), VOCAB)
    return folder


def test_calibration_data_reads_train_shards_only_and_refuses_validation(tmp_path):
    data = _write_split_shards(tmp_path / "data")
    rng_before = torch.get_rng_state()
    cal = TrainCalibration(data, vocab_size=VOCAB, rows=4, seq_len=128, device="cpu", seed=1)
    got = list(cal.batches(5))
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNGs are left alone
    assert all(b.shape == (4, 128) and b.dtype == torch.int64 for b in got)
    assert max(int(b.max()) for b in got) < TRAIN_IDS and cal.tokens_served == 5 * 4 * 128
    again = TrainCalibration(data, vocab_size=VOCAB, rows=4, seq_len=128, device="cpu", seed=1)
    assert all(torch.equal(a, b) for a, b in zip(got, again.batches(5), strict=True))  # seeded
    for split in ("val", "validation"):
        with pytest.raises(ConfigError, match="training tokens only"):
            cal.batches(1, split=split)
    with pytest.raises(ConfigError, match="count"):
        cal.batches(-1)
    short = TrainCalibration(data, vocab_size=VOCAB, rows=1, seq_len=5000, device="cpu", seed=1)
    assert list(short.batches(0)) == []  # built for every export, an error only when used
    with pytest.raises(DataError, match="window of seq_len=5000"):
        short.batches(1)


def _export_state(tmp_path: Path, quantizer) -> tuple[RunState, TrainContext]:
    data = _write_split_shards(tmp_path / "data")
    config = RunConfig(
        name="gptq_export",
        model=GPTConfig(num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2),
        optimizer=MuonConfig(),
        quantizer=quantizer,
        compressor=ZlibConfig(level=1),
        data=DataConfig(data_path=str(data), vocab_size=VOCAB),
        train=TrainConfig(train_batch_tokens=512, train_seq_len=128, grad_accum_steps=2, seed=3),
        eval=EvalConfig(),
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)
    log = RunLogger(run_dir, echo=False)
    run = RunState(config, dist, run_manager(component_modules(config)), log, "r", run_dir, None, 2)
    run.data = DataPaths(data_path=data, tokenizer_path=tmp_path / "none.model", builtin=False)
    run.code_path = run_dir / "train_gpt.py"
    run.code_path.write_text("# code\n")
    ctx = TrainContext(
        config=config, model=_tiny_gpt(), optimizer=None, log=log, dist=dist, autocast_dtype=None
    )
    return run, ctx


def test_export_calibrates_gptq_on_training_tokens_only(tmp_path):
    quantizer = GPTQConfig(passthrough_max_numel=1024, calibration_batches=3)
    run, ctx = _export_state(tmp_path, quantizer)
    seen: list[torch.Tensor] = []
    ctx.model.tok_emb.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].clone()))
    ctx.model.train()
    export_phase.export(run, ctx)
    run.log.close()
    # 512 tokens / (1 rank x 2 micro-batches) = 256 tokens a batch: 2 rows of 128.
    assert [tuple(ids.shape) for ids in seen] == [(2, 128)] * 3
    assert max(int(ids.max()) for ids in seen) < TRAIN_IDS  # never a validation id
    assert ctx.model.training  # the export restores the mode it found
    log_text = (run.run_dir / "train.log").read_text()
    assert "calibration:int6gptq hessians:" in log_text and "train_tokens:768 seed:3" in log_text
    events = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(e["event"] == "calibration" and e["train_tokens"] == 768 for e in events)
    _state, manifest = load_state_dict(run.artifact_path, run.manager.registry)
    metas = {name: t["meta"] for name, t in manifest["tensors"].items()}
    assert metas["tok_emb.weight"]["hessian"] and metas["blocks.0.attn.c_q.weight"]["hessian"]


def test_export_leaves_quantizers_without_calibrate_alone(tmp_path):
    run, ctx = _export_state(tmp_path, Int8Config())
    seen: list[torch.Tensor] = []
    ctx.model.tok_emb.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    export_phase.export(run, ctx)
    run.log.close()
    assert seen == [] and "calibration:" not in (run.run_dir / "train.log").read_text()
    assert ctx.calibration is not None  # still offered to pg_before_quantize plugins


def test_a_file_without_the_calibration_module_exports_the_same_artifact_and_offers_no_batches(
    tmp_path, monkeypatch
):
    """As a shipped file whose config names no calibration (`harness.api.by_name.CALIBRATION_MODULE`)."""
    run, ctx = _export_state(tmp_path / "repo", Int8Config())
    export_phase.export(run, ctx)
    run.log.close()
    leave_out(monkeypatch, CALIBRATION_MODULE)
    shipped_run, shipped_ctx = _export_state(tmp_path / "shipped", Int8Config())
    export_phase.export(shipped_run, shipped_ctx)
    shipped_run.log.close()
    assert shipped_ctx.calibration is None
    assert shipped_run.artifact_path.read_bytes() == run.artifact_path.read_bytes()


def test_a_calibrating_quantizer_without_the_calibration_module_stops_naming_it(tmp_path, monkeypatch):
    leave_out(monkeypatch, CALIBRATION_MODULE)
    run, ctx = _export_state(tmp_path, GPTQConfig(passthrough_max_numel=1024, calibration_batches=1))
    with pytest.raises(ModuleNotFoundError, match="'harness.pipeline.calibration' was not bundled"):
        export_phase.export(run, ctx)
    run.log.close()
    assert not run.artifact_path.exists()
