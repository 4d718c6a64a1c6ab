"""The merged 10L Int5-MLP record (2026-03-20_10L_Int5MLP_MuonWD04_SWA50, val_bpb 1.1428,
3 seeds) and its single-GPU port PR #560 (val_bpb 1.1935 on one RTX PRO 6000).

10 layers, MLP 3x relu^2, BigramHash(10240), SmearGate, orthogonal init (x1/sqrt(2L) on the
non-zero projection, i.e. bigram.proj); Muon WD 0.04 + AdamW groups; SWA (lr scale < 0.4,
every 50); 3% magnitude pruning; mixed int5 (MLP) / int6 (attention, bigram) / fp16
(tok_emb and blocks.8.attn.c_k, the 9-layer leftover) one value per byte + zstd-22; sliding
window eval at stride 64. model_params:25517137.

Deliberate differences: SWA sums in float32 (upstream summed bf16 tables in bf16); zstandard
is required (upstream silently fell back to zlib, which breaks the size limit).

Compressor: zstd-22 stays because the record shipped it; Brotli-11 and the ``ans`` coder measured
0.5-0.8 % smaller on trained int5/int6 codes (benchmarks/compression_bound.txt), but this
submission reproduces the record's artifact, not the smallest one.

Run (8xH100): torchrun --standalone --nproc_per_node=8 harness/run.py submissions/10L_int5mlp
PR #560 variant (one GPU, non-record track), through the upstream variables it used:
  TRAIN_BATCH_TOKENS=131072 MAX_WALLCLOCK_SECONDS=2700 WARMUP_STEPS=5 EVAL_BATCH_SEQS=64 \\
  torchrun --standalone --nproc_per_node=1 harness/run.py submissions/10L_int5mlp --set track=non_record_16mb
(grad accumulation stays 8 // world size = 8, as in PR #560.)
"""

from __future__ import annotations

from harness.api.config import EvalConfig, RunConfig, TrainConfig, cpu_smoke_profile
from harness.pipeline.runner import run
from plugins.algorithms.prune import PruneConfig
from plugins.arch.bigram_hash import BigramHashConfig
from plugins.arch.gpt import GPTConfig
from plugins.arch.smeargate import SmearGateConfig
from plugins.averaging.swa import SWAConfig
from plugins.compress.zstd import ZstdConfig
from plugins.optim.muon import t1_optimizer
from plugins.quant.mixed import MixedConfig
from plugins.schedule.step_warmdown import StepWarmdownConfig

# 2 CPU cores: half-size batches, 40 steps (the 360 s cap is a safety net), a step-counted LR
# schedule with a 5-step warm-up and an 8k-token validation subset.
CPU_SMOKE = cpu_smoke_profile(
    batch_tokens=4096, val_tokens=8192, eval_batch_seqs=16, steps=40, cap_s=360.0
) | {
    "schedule": StepWarmdownConfig(warmup_steps=5, warmdown_iters=15),
}

# The PR #560 settings as environment variables (upstream names); see the docstring.
PR560_ENV = {
    "TRAIN_BATCH_TOKENS": "131072",
    "MAX_WALLCLOCK_SECONDS": "2700",
    "WARMUP_STEPS": "5",
    "EVAL_BATCH_SEQS": "64",
}


def build_config() -> RunConfig:
    """The merged record's defaults, under the upstream names."""
    model = GPTConfig(
        num_layers=10,
        model_dim=512,
        num_heads=8,
        num_kv_heads=4,
        mlp_mult=3.0,
        orthogonal_init=True,
        orthogonal_proj_scale=True,
        components=(BigramHashConfig(buckets=10240, dim=128), SmearGateConfig()),
    )
    return RunConfig(
        name="10L_int5mlp",
        author="thwu1 (10L Int5-MLP record) / PR #560 port, rebuilt on pgolf",
        github_id="",
        blurb="10L, MLP3x, BigramHash10240, SmearGate, SWA, 3% pruning, int5 MLP / int6 attn + zstd-22",
        model=model,
        optimizer=t1_optimizer(),
        quantizer=MixedConfig.t1(),
        compressor=ZstdConfig(level=22),
        plugins=(SWAConfig(start_frac=0.4, every=50), PruneConfig(fraction=0.03)),
        train=TrainConfig(
            train_batch_tokens=786_432,
            train_seq_len=2048,
            warmup_steps=20,
            warmdown_iters=3000,
            grad_clip_norm=0.3,
            train_log_every=100,
            val_loss_every=500,
        ),
        eval=EvalConfig(eval_seq_len=2048, eval_stride=64, eval_batch_seqs=32),
        cpu_profile=CPU_SMOKE,
    )


if __name__ == "__main__":
    run(build_config())
