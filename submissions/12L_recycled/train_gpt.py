"""PR #1573 "12L RecycledCore Int5" (val_bpb 1.1464 sliding, 15,925,822 bytes), as it ran.

Built from the record's code and log, not its README (docs/techniques.md §1: the README claims 11L,
4x MLP, parallel residuals and QK-gain 5.25, none of which the script runs): 12 physical
layers, layers 3 and 4 replayed once (14 virtual), MLP 3x LeakyReLU(0.5)^2, BigramHash(2048),
SmearGate, value embeddings on layers 10-11, value residual, gated attention, XSA on the last
4 layers, partial RoPE (16 dims, the NTK base quirk of its hard-coded 1024 included), LN scale,
orthogonal init; Muon WD 0.04 + AdamW groups; SWA (lr scale < 0.2, every 50) over EMA 0.997;
int5 per-row with GPTQ-lite clip search, bit-packed, + lzma-9. model_params:29406940.
``init_order="banks"`` draws in P1573's order (its banked matrices drawn in a per-layer
orthogonal pass), so a seed gives the record's initial tensors bit for bit
(tests/unit/test_init_parity.py).

Deliberate differences: no late QAT (upstream's flag reached only fp16-exported layers and
was baked by compile, so it never changed the artifact; add LateQATConfig() to get the intended
effect); one 2-D parameter per matrix instead of 4 parameter banks with a hand-written parallel
Muon (same update per matrix: ``bank_arithmetic`` keeps its bf16 momentum and roundings, and the
clip norms each bank as one tensor, so 20 CPU fp32 steps match its losses bit for bit,
benchmarks/upstream_parity); gradients clipped after DDP averaging, not per rank before it.

Compressor: lzma-9 stays because it is what PR #1573 shipped on its bit-packed int5 codes (the
run reproduces the record's artifact, not the smallest one); the ``ans`` coder measured smaller
on this submission's smoke artifact (README, Compression at the entropy bound).

Run: torchrun --standalone --nproc_per_node=8 harness/run.py submissions/12L_recycled
"""

from __future__ import annotations

from harness.api.config import EvalConfig, RunConfig, TrainConfig, cpu_smoke_profile
from harness.pipeline.runner import run
from plugins.arch.bigram_hash import BigramHashConfig
from plugins.arch.gated_attention import GatedAttentionConfig
from plugins.arch.gpt import GPTConfig
from plugins.arch.recycled_core import RecycledCoreConfig
from plugins.arch.smeargate import SmearGateConfig
from plugins.arch.value_embed import ValueEmbedConfig
from plugins.arch.value_residual import ValueResidualConfig
from plugins.arch.xsa import XSAConfig
from plugins.averaging.ema import EMAConfig
from plugins.averaging.swa import SWAConfig
from plugins.compress.lzma import LzmaConfig
from plugins.optim.muon import p1573_optimizer
from plugins.quant.intn import IntNConfig
from plugins.schedule.step_warmdown import StepWarmdownConfig

# 2 CPU cores: 14 virtual layers at 700-1,200 train tokens/s (a loaded machine halves it), so
# half-size batches, 40 steps (the 360 s cap is a safety net) and an 8k-token validation subset
# keep the whole smoke run under 10 minutes. So that 40 steps learn: a step-counted schedule
# with a 5-step LR warm-up (the full LR from step 1 sends the loss from 6.9 to 11.9), no EMA
# swap (40 updates at decay 0.997 leave the shadow at 89% initialisation), and an int5 step
# floor of 0.03: PR #1573's 1/15 rounds nearly every weight of a barely trained model to 0
# (+0.85 nats after the roundtrip), while 0.001 keeps the near-Gaussian codes so spread out
# that the artifact grows past 16,000,000 bytes (18.2 MB measured).
CPU_SMOKE = cpu_smoke_profile(
    batch_tokens=4096, val_tokens=8192, eval_batch_seqs=16, steps=40, cap_s=360.0
) | {
    "schedule": StepWarmdownConfig(warmup_steps=5, warmdown_iters=15),
    "plugins.ema.apply": False,
    "quantizer.scale_floor": 0.03,
}


def build_config() -> RunConfig:
    """PR #1573's defaults, under the upstream names."""
    model = GPTConfig(
        num_layers=12,
        model_dim=512,
        num_heads=8,
        num_kv_heads=4,
        mlp_mult=3.0,
        mlp_activation="leaky_relu2",
        rope_dims=16,
        rope_train_seq_len=1024,
        ln_scale=True,
        orthogonal_init=True,
        init_order="banks",
        qk_gain_init=1.5,
        components=(
            BigramHashConfig(buckets=2048, dim=128),
            SmearGateConfig(),
            ValueEmbedConfig(layers=(10, 11), dim=128),
            ValueResidualConfig(),
            GatedAttentionConfig(),
            XSAConfig(last_n=4),
            RecycledCoreConfig(layers=(3, 4), repeats=1),
        ),
    )
    return RunConfig(
        name="12L_recycled",
        author="PR #1573 (12L RecycledCore Int5), rebuilt on pgolf",
        github_id="",
        blurb="12L + recycled layers 3,4, XSA4, VE, value residual, gated attn, BigramHash2048, "
        "int5 GPTQ-lite + lzma",
        model=model,
        optimizer=p1573_optimizer(),
        quantizer=IntNConfig.p1573(),
        compressor=LzmaConfig(preset=9),
        plugins=(SWAConfig(start_frac=0.2, every=50), EMAConfig(decay=0.997)),
        train=TrainConfig(
            train_batch_tokens=786_432,
            train_seq_len=2048,
            warmup_steps=20,
            warmdown_iters=3500,
            grad_clip_norm=0.3,
            train_log_every=500,
            val_loss_every=4000,
        ),
        eval=EvalConfig(eval_seq_len=2048, eval_stride=64, eval_batch_seqs=32),
        cpu_profile=CPU_SMOKE,
    )


if __name__ == "__main__":
    run(build_config())
