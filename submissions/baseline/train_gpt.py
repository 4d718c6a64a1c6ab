"""The upstream naive baseline (records/track_10min_16mb/2026-03-17_NaiveBaseline), as plugins.

9 layers, width 512, 8 query / 4 KV heads, MLP 2x relu^2, tied embeddings, logit softcap
30, U-Net skips; Muon (Newton-Schulz, 5 steps) for matrices with Adam for embeddings and
scalars; per-row int8 + zlib-9 export. Upstream: val_bpb 1.2244 on 8xH100, 15,863,489
bytes, model_params:17059912.

Compressor: zlib-9 stays although every other codec measured smaller on trained codes
(benchmarks/compression_bound.txt): it is upstream's, and this submission reproduces upstream's
baseline and its byte count.

Run: torchrun --standalone --nproc_per_node=8 harness/run.py submissions/baseline
"""

from __future__ import annotations

from harness.api.config import RunConfig, TrainConfig, cpu_smoke_profile
from harness.pipeline.runner import run
from plugins.arch.gpt import GPTConfig
from plugins.compress.zlib import ZlibConfig
from plugins.optim.muon import MuonConfig
from plugins.quant.int8 import Int8Config
from plugins.schedule.step_warmdown import StepWarmdownConfig

# 2 CPU cores: 40 steps of 4,096 tokens (the 360 s cap is a safety net), a step-counted LR
# schedule with a 5-step warm-up, so the smoke run learns the same way however loaded the
# machine is.
CPU_SMOKE = cpu_smoke_profile(batch_tokens=4096, steps=40, cap_s=360.0) | {
    "schedule": StepWarmdownConfig(warmup_steps=5, warmdown_iters=15),
}


def build_config() -> RunConfig:
    """The baseline's hyperparameters, under their upstream names."""
    return RunConfig(
        name="baseline",
        author="OpenAI (upstream naive baseline), rebuilt on pgolf",
        github_id="openai",
        blurb="Naive baseline: 9x512 GPT, Muon + Adam, int8 per-row + zlib-9",
        model=GPTConfig(
            num_layers=9, model_dim=512, num_heads=8, num_kv_heads=4, mlp_mult=2.0, tie_embeddings=True
        ),
        optimizer=MuonConfig(matrix_lr=0.04, scalar_lr=0.04, tied_embed_lr=0.05, momentum=0.95),
        quantizer=Int8Config(),
        compressor=ZlibConfig(level=9),
        train=TrainConfig(
            train_batch_tokens=524_288, train_seq_len=1024, warmdown_iters=1200, warmup_steps=20
        ),
        cpu_profile=CPU_SMOKE,
    )


if __name__ == "__main__":
    run(build_config())
