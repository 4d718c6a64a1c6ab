"""Codecs against the entropy of trained int5 and int6 codes (CPU, a few minutes).

Usage: ``python benchmarks/compression_bound.py [--steps 100] [--seed 0]``
(output committed as ``benchmarks/compression_bound.txt``; the table is in README.md).

The ``ans`` coder's earlier ratio to the bound was measured on a 10-step model whose codes sat
on a few levels. Here a proxy is trained until it has learned something: a 4-layer x 256 GPT
(the ``gpt`` plugin; vocab 1024) on the built-in default dataset (``pgolf data``), Adam, batches
of 16 x 256 tokens drawn at seeded random offsets of the train split. Training stops once the
validation cross-entropy (first 32,768 val tokens) is below the unigram baseline's
(`harness.pipeline.baselines`: train-split token frequencies, the same val tokens) and at least
``--steps`` steps have run; the script refuses to report a model that never got there.

The trained weights are quantized with the ``intn`` quantizer at 5 and 6 bits, one code per byte
(``packed=False``, the layout LZ codecs compress best), every block matrix included
(``passthrough_max_numel`` 16,384: at width 256 the attention matrices have 65,536 elements,
which the default would keep as floats). The symbols measured are the codes of those intN
matrices only (the embedding keeps the baseline's 8-bit recipe), concatenated in name order.
For each bit width the table gives each codec's bytes on those codes (brotli
with the plugin's byte shuffle at stride 1, since codes are single bytes; ``ans`` with the
per-array layout), the order-0 bound (n * H0, one symbol table, and per class as
`harness.pipeline.entropy_report` computes it) and the empirical order-1 entropy
(sum over arrays of n * H(code | previous code in the row-major stream); it leaves out the
cost of the 2^bits x 2^bits tables a coder would need to send).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from harness.api.layout import Segment
from harness.api.tensor_classes import tensor_class
from harness.datasets.default import ensure_default_dataset
from harness.pipeline.baselines import train_unigram, unigram_ce
from harness.pipeline.entropy_report import entropy_report, order0_bits
from harness.pipeline.shards import list_shards, load_validation_tokens, read_shard
from plugins.arch.gpt import GPTConfig
from plugins.compress.ans import AnsConfig
from plugins.compress.brotli import BrotliConfig
from plugins.compress.lzma import LzmaConfig
from plugins.compress.zlib import ZlibConfig
from plugins.compress.zstd import ZstdConfig
from plugins.quant.intn import IntNConfig

VOCAB, SEQ, BATCH, VAL_TOKENS = 1024, 256, 16, 32_768
CODECS = (
    ("zlib-9", ZlibConfig(level=9)),
    ("zstd-22", ZstdConfig(level=22)),
    ("lzma-9", LzmaConfig(preset=9)),
    ("brotli-11", BrotliConfig(quality=11, stride=1)),
    ("ans", AnsConfig()),
)


def val_ce(model: torch.nn.Module, val: torch.Tensor) -> float:
    """Mean next-token cross-entropy (nats) over ``val`` cut into rows of SEQ tokens."""
    rows = (val.numel() - 1) // SEQ
    x = val[: rows * SEQ].view(rows, SEQ)
    y = val[1 : rows * SEQ + 1].view(rows, SEQ)
    total = 0.0
    model.eval()
    with torch.no_grad():
        for i in range(0, rows, 32):
            logits = model(x[i : i + 32]).float()
            total += F.cross_entropy(
                logits.reshape(-1, VOCAB), y[i : i + 32].reshape(-1), reduction="sum"
            ).item()
    model.train()
    return total / (rows * SEQ)


def train_proxy(steps: int, seed: int, max_steps: int) -> tuple[dict[str, torch.Tensor], dict]:
    """Train until val CE < unigram CE and ``steps`` have run; (state dict, training facts)."""
    data = ensure_default_dataset(progress=False)
    train = np.concatenate([read_shard(p) for p in list_shards(data.data_path, "train")]).astype(np.int64)
    val = load_validation_tokens(data.data_path, SEQ, VOCAB, max_targets=VAL_TOKENS)
    unigram = unigram_ce(train_unigram(data.data_path, VOCAB).probs, val)
    torch.manual_seed(seed)
    model = GPTConfig(num_layers=4, model_dim=256, num_heads=4, num_kv_heads=2, mlp_mult=2.0).build(VOCAB)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.95))
    rng = np.random.default_rng(seed)
    t0, ce, step = time.perf_counter(), float("inf"), 0
    while step < max_steps and (step < steps or not ce < unigram):
        starts = rng.integers(0, train.size - SEQ - 1, BATCH)
        batch = torch.from_numpy(np.stack([train[s : s + SEQ + 1] for s in starts]))
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0 or step >= steps:
            ce = val_ce(model, val)
            print(
                f"# step {step} train_loss {loss.item():.4f} val_ce {ce:.4f} unigram_ce {unigram:.4f}",
                flush=True,
            )
    if not ce < unigram:
        raise SystemExit(
            f"the proxy did not beat the unigram baseline in {max_steps} steps ({ce:.4f} >= {unigram:.4f})"
        )
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    facts = dict(
        steps=step, val_ce=ce, unigram_ce=unigram, seconds=time.perf_counter() - t0, train_tokens=train.size
    )
    return state, facts


def order1_bits(codes: np.ndarray) -> float:
    """n * H(x_t | x_{t-1}) of one stream of integer codes (plus log2 of the alphabet for the
    first symbol)."""
    x = codes.astype(np.int64) - int(codes.min())
    alphabet = int(x.max()) + 1
    pairs = np.bincount(x[:-1] * alphabet + x[1:], minlength=alphabet * alphabet).reshape(alphabet, alphabet)
    bits = sum(order0_bits(row) for row in pairs)
    return bits + math.log2(alphabet)


def measure(state: dict[str, torch.Tensor], bits: int) -> dict:
    """Codec bytes and entropies of the intN codes of ``state`` quantized at ``bits``."""
    cfg = IntNConfig(bits=bits, packed=False, passthrough_max_numel=16_384)
    qtensors = cfg.build().quantize(state)
    codes = {n: qt for n, qt in sorted(qtensors.items()) if qt.kind == "intn" and qt.meta["bits"] == bits}
    arrays = [(n, qt.arrays["q"].reshape(-1).numpy().view(np.uint8)) for n, qt in codes.items()]
    raw = b"".join(a.tobytes() for _, a in arrays)
    layout, offset = [], 0
    for name, a in arrays:
        layout.append(Segment(offset, a.size, 8, a.size, tensor_class(name, "intn", "q"), name))
        offset += a.size
    pooled = np.concatenate([a for _, a in arrays])
    levels = np.unique(pooled).size
    out = {
        "symbols": pooled.size,
        "levels used": levels,
        "order-0 (one table)": order0_bits(np.bincount(pooled, minlength=256)) / 8,
        # The report also counts the scale arrays (class "scales"); only the code classes here.
        "order-0 (per class)": sum(
            c.bound_bytes for c in entropy_report(codes, 0).classes if c.cls not in ("scales", "float")
        ),
        "order-1 (per array)": sum(order1_bits(a.view(np.int8)) for _, a in arrays) / 8,
    }
    for label, cfg in CODECS:
        comp = cfg.build()
        t0 = time.perf_counter()
        blob = comp.compress(raw, layout=layout) if label == "ans" else comp.compress(raw)
        seconds = time.perf_counter() - t0
        assert comp.decompress(blob, max_output_size=len(raw)) == raw, label
        out[label] = (len(blob), seconds)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100, help="train at least this many steps")
    ap.add_argument("--max-steps", type=int, default=2000, help="give up after this many")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    state, facts = train_proxy(args.steps, args.seed, args.max_steps)
    params = sum(t.numel() for t in state.values())
    print(
        f"# proxy: GPT 4x256, {params:,} parameters, {facts['steps']} Adam steps of {BATCH}x{SEQ} tokens "
        f"({facts['seconds']:.0f} s), val CE {facts['val_ce']:.4f} < unigram CE {facts['unigram_ce']:.4f} "
        f"(first {VAL_TOKENS:,} val tokens); seed {args.seed}, torch {torch.__version__}\n"
    )
    results = {bits: measure(state, bits) for bits in (5, 6)}
    labels = [label for label, _ in CODECS]
    print(
        "| codes | symbols (levels used) | order-1 | order-0 per class | order-0 | "
        + " | ".join(labels)
        + " |"
    )
    print("|---|---:|---:|---:|---:|" + "---:|" * len(labels))
    for bits, r in results.items():
        bound = r["order-0 (per class)"]
        cells = [f"{r[label][0]:,} ({r[label][0] / bound:.3f}x)" for label in labels]
        order1, pooled = r["order-1 (per array)"], r["order-0 (one table)"]
        print(
            f"| int{bits} | {r['symbols']:,} ({r['levels used']}) | {order1:,.0f} ({order1 / bound:.3f}x) "
            f"| {bound:,.0f} (1x) | {pooled:,.0f} | " + " | ".join(cells) + " |"
        )
    print("\nBytes (ratio to the per-class order-0 bound). Compress seconds on this machine:")
    for bits, r in results.items():
        print(f"# int{bits}: " + ", ".join(f"{label} {r[label][1]:.2f}s" for label in labels))


if __name__ == "__main__":
    main()
