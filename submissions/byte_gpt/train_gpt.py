"""The reference byte-level GPT (dancinlab clm-v1-ref-pytorch-cuda ladder, docs/techniques.md §11.1),
at the 16 MB budget and scored by the challenge's rules.

Reproduces the Lane-G ref ByteGPT recipe on raw UTF-8 bytes (vocabulary 256): a pre-LN GPT
with learned positions and a tied head (plugins/arch/byte_gpt.py), AdamW betas (0.9, 0.95),
weight decay 0.1 on all parameters, gradients clipped at 1.0, lr 3e-4 with 100 linear
warm-up steps, then lr·(0.45·(1 + cos πp) + 0.05), bf16 autocast with TF32 matmuls on GPU,
512-byte rows. Shape ladder (``ladder``): "16mb" d 384 x 12 layers x 6 heads, 21,589,248
params (used here: its random init exports int6 with an fp16 tied embedding to about 14.9 MB,
see Compressor below); "85m" d 768 x 12 x 12, 85,645,824 params (the 85.6M ref); "3b" d 2560 x
40 x 20, 3,149,030,400 params (the 3B ref: set grad_checkpointing, it does not fit 16 MB).

Deliberate differences from the reference: the reference reports the loss of ONE random
validation batch per eval (12 x 512 bytes for the 3B) and calls "last < first" a pass; here the harness
scores the whole held-out split (sliding window 512, stride 64) in bits per byte after the
int6 roundtrip. Its tok/s counted eval forwards and the first step's warm-up; the harness
times the training loop only. Its step budget becomes the 10-minute wallclock: the cosine's
progress runs on the clock (warm-up share estimated from the step time), so the floor is
reached at the cap. Its batch of 32 rows on one GPU becomes the track's 524,288-byte global
batch (lr kept at 3e-4). Rows come from the harness's byte shards, not from random offsets in one file.

Compressor: byte shuffle + Brotli-11 (``BrotliConfig()``), the smallest measured for it: the
random-init 16mb export's payload is 14,908,569 bytes against lzma-9's 15,190,916 (-1.9 %, about
20 s more on 2 CPU cores), and Brotli-11 is also the smallest codec on trained int6 codes
(benchmarks/compression_bound.txt).

Run: torchrun --standalone --nproc_per_node=8 harness/run.py submissions/byte_gpt
"""

from __future__ import annotations

from harness.api.config import DataConfig, EvalConfig, RunConfig, TrainConfig, cpu_smoke_profile
from harness.pipeline.runner import run
from plugins.arch.byte_gpt import ladder
from plugins.compress.brotli import BrotliConfig
from plugins.optim.adamw import AdamWConfig
from plugins.quant.mixed import MixedConfig
from plugins.schedule.cosine import CosineConfig

# 2 CPU cores: ~600 train and ~1,300 eval bytes/s for the 16mb shape under bf16 autocast.
# Eval costs ~10x val_tokens forwards (two standard passes + the stride-64 window at 8x).
# A smoke run is 40 steps (the 360 s cap is a safety net), its cosine counted in steps, not
# wallclock, so it learns the same way on a loaded machine: a 5-step LR warm-up instead of 100.
CPU_SMOKE = {
    **cpu_smoke_profile(
        batch_tokens=4096, val_tokens=16384, seq_len=512, eval_batch_seqs=16, steps=40, cap_s=360.0
    ),
    "schedule.warmup_steps": 5,
    "schedule.use_wallclock": False,
}


def build_config() -> RunConfig:
    """The reference recipe at the 16 MB rung."""
    return RunConfig(
        name="byte_gpt",
        author="dancinlab Lane-G ref ByteGPT recipe, rebuilt on pgolf",
        github_id="",
        blurb="Byte-level (V=256) pre-LN GPT 12x384, learned positions, tied head; "
        "AdamW + warmup/cosine; int6 + brotli",
        model=ladder("16mb"),
        optimizer=AdamWConfig(lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, decay_all=True),
        # int6 per row (row max, no floor) for every matrix; the tied embedding/head stays fp16.
        quantizer=MixedConfig(
            rules=(("blocks.", "int6"), ("pos_emb", "int6")),
            keep_fp16_patterns=("tok_emb",),
            default_encoding="int6",
            passthrough_max_numel=65_536,
            allow_extra_negative=False,
        ),
        compressor=BrotliConfig(),
        schedule=CosineConfig(warmup_steps=100, peak_scale=0.95, min_scale=0.05, decay_after_warmup=True),
        data=DataConfig(vocab_size=256, default_variant="bytes"),
        train=TrainConfig(
            train_batch_tokens=524_288,
            train_seq_len=512,
            iterations=20_000,
            warmup_steps=20,
            grad_clip_norm=1.0,
            train_log_every=200,
            val_loss_every=1000,
        ),
        eval=EvalConfig(eval_seq_len=512, eval_stride=64, eval_batch_seqs=64),
        cpu_profile=CPU_SMOKE,
    )


if __name__ == "__main__":
    run(build_config())
