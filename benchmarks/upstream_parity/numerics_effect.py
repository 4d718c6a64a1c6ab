"""The effect of the ``upstream_numerics`` component on one artifact's score (same weights, same eval).

Usage::

    python benchmarks/upstream_parity/numerics_effect.py ARTIFACT --data-path DIR \
        --tokenizer-path MODEL [--seq-len 1024] [--val-max-tokens 0] [--autocast bf16|none]

Scores the artifact's weights twice with the harness's standard evaluation: with the switch
off (fp32 RoPE tables, fp32 embedding) and on (upstream's bf16 positions, frequencies and
embedding), everything else equal, and prints both and their difference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from harness.pipeline.bpb import build_byte_luts
from harness.pipeline.eval import evaluate_standard
from harness.pipeline.shards import load_validation_tokens
from harness.tools.rescore import model_from_artifact
from plugins.arch.upstream_numerics import UpstreamNumericsConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--data-path", type=Path, required=True)
    ap.add_argument("--tokenizer-path", type=Path, required=True)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--val-max-tokens", type=int, default=0)
    ap.add_argument("--autocast", choices=("bf16", "none"), default="bf16")
    args = ap.parse_args()
    model, manifest = model_from_artifact(args.artifact)
    state = model.state_dict()
    vocab = int(manifest["extras"]["vocab_size"])
    luts = build_byte_luts(args.tokenizer_path, vocab)
    val = load_validation_tokens(args.data_path, args.seq_len, vocab, max_targets=args.val_max_tokens)
    autocast = torch.bfloat16 if args.autocast == "bf16" else None
    out = {}
    plain = tuple(c for c in model.cfg.components if not isinstance(c, UpstreamNumericsConfig))
    for switch in (False, True):
        cfg = dataclasses.replace(
            model.cfg, components=plain + ((UpstreamNumericsConfig(),) if switch else ())
        )
        m = cfg.build(vocab)
        m.load_state_dict(state, strict=True)
        res = evaluate_standard(
            m.eval(), val, luts, seq_len=args.seq_len, batch_seqs=8, device="cpu", autocast_dtype=autocast
        )
        out[f"upstream_numerics={switch}"] = {"val_loss": res.val_loss, "val_bpb": res.val_bpb}
    on, off = out["upstream_numerics=True"], out["upstream_numerics=False"]
    out["delta_val_loss"] = on["val_loss"] - off["val_loss"]
    out["delta_val_bpb"] = on["val_bpb"] - off["val_bpb"]
    out["tokens"] = int(val.numel() - 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
