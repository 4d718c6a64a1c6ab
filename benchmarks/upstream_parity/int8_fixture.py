"""Write an int8 checkpoint with upstream's baseline code and upstream's score for it (CPU).

Usage::

    python benchmarks/upstream_parity/int8_fixture.py --upstream /path/to/upstream/train_gpt.py \
        --tokenizer /path/to/fineweb_1024_bpe.model --out tests/fixtures/upstream_int8

What it does, all with the upstream module's own functions (nothing re-implemented):

1. builds upstream's ``GPT`` at a tiny shape (2 layers, width 32, 2 heads, 1 KV head, vocab
   1024) at seed 1337, applies the dtype policy of upstream ``main()`` (``.bfloat16()``, then
   CastedLinear and low-dim parameters back to fp32), and fills every parameter with seeded
   random values of a trained-like scale, so the score is not the trivial ln(1024);
2. lowers upstream's ``INT8_KEEP_FLOAT_MAX_NUMEL`` to 256, so that at this tiny shape the
   matrices take the per-row int8 route they take at full size (the format is unchanged);
3. exports with ``quantize_state_dict_int8``, ``torch.save`` and ``zlib.compress(level=9)``
   exactly as upstream ``main()`` does, into ``OUT/tiny.int8.ptz``;
4. dequantizes with ``dequantize_state_dict_int8`` (upstream's roundtrip, minus the
   ``torch.load`` of its own fresh bytes), loads the model, and runs upstream ``eval_val`` on
   CPU over a fixed token sequence (``val_tokens`` below) with upstream's
   ``build_sentencepiece_luts``; writes the result to ``OUT/expected.json``.

`tests/unit/test_upstream_import.py` imports the ``.ptz`` with ``pgolf import`` and checks
that ``rescore`` reproduces those numbers to 1e-6.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import types
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upstream_module import load_upstream  # noqa: E402

SHAPE = dict(
    vocab_size=1024,
    num_layers=2,
    model_dim=32,
    num_heads=2,
    num_kv_heads=1,
    mlp_mult=2,
    tie_embeddings=True,
    tied_embed_init_std=0.005,
    logit_softcap=30.0,
    rope_base=10000.0,
    qk_gain_init=1.5,
)
SEQ_LEN = 128
NUM_SEQS = 24
SEED = 1337


def val_tokens(count: int = NUM_SEQS * SEQ_LEN + 1, vocab: int = 1024) -> torch.Tensor:
    """A fixed token sequence from integer arithmetic only (no RNG, identical everywhere):
    a quadratic residue walk, skewed to small ids like real BPE streams."""
    return torch.tensor([((i * i * 7 + i * 13 + 5) % 9973) % vocab for i in range(count)], dtype=torch.int64)


def trained_like(model: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter with seeded values: matrices N(0, 1/fan_in), the embedding
    N(0, 0.5), gains and mixes near their init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name == "tok_emb.weight":
                value = noise * 0.5
            elif p.ndim == 2 and "resid_mix" not in name and "skip_weights" not in name:
                value = noise / p.shape[1] ** 0.5
            else:
                value = p.detach().float() + 0.1 * noise
            p.copy_(value.to(p.dtype))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="upstream baseline train_gpt.py")
    ap.add_argument("--tokenizer", required=True, help="fineweb_1024_bpe.model")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    up = load_upstream(args.upstream)
    torch.manual_seed(SEED)
    model = up.GPT(**SHAPE).bfloat16()
    for module in model.modules():
        if isinstance(module, up.CastedLinear):
            module.float()
    up.restore_low_dim_params_to_fp32(model)
    trained_like(model, SEED)

    up.INT8_KEEP_FLOAT_MAX_NUMEL = 256
    quant_obj, stats = up.quantize_state_dict_int8(model.state_dict())
    buf = io.BytesIO()
    torch.save(quant_obj, buf)
    blob = zlib.compress(buf.getvalue(), level=9)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tiny.int8.ptz").write_bytes(blob)

    model.load_state_dict(up.dequantize_state_dict_int8(quant_obj), strict=True)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=args.tokenizer)
    luts = up.build_sentencepiece_luts(sp, SHAPE["vocab_size"], torch.device("cpu"))
    hp = types.SimpleNamespace(val_batch_size=8 * SEQ_LEN, train_seq_len=SEQ_LEN)
    loss, bpb = up.eval_val(hp, model, 0, 1, torch.device("cpu"), 1, val_tokens(), *luts)
    expected = {
        "what": "upstream eval_val on CPU of the dequantized tiny.int8.ptz (see int8_fixture.py)",
        "command": "python benchmarks/upstream_parity/int8_fixture.py --upstream train_gpt.py "
        "--tokenizer fineweb_1024_bpe.model --out tests/fixtures/upstream_int8",
        "upstream_file_sha256": hashlib.sha256(Path(args.upstream).read_bytes()).hexdigest(),
        "tokenizer_sha256": hashlib.sha256(Path(args.tokenizer).read_bytes()).hexdigest(),
        "ptz_sha256": hashlib.sha256(blob).hexdigest(),
        "torch": torch.__version__,
        "shape": SHAPE,
        "seq_len": SEQ_LEN,
        "num_seqs": NUM_SEQS,
        "quantized": sorted(quant_obj["quantized"]),
        "passthrough": sorted(quant_obj["passthrough"]),
        "int8_payload_bytes": stats["int8_payload_bytes"],
        "val_loss": loss,
        "val_bpb": bpb,
    }
    (args.out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: expected[k] for k in ("val_loss", "val_bpb", "ptz_sha256")}))


if __name__ == "__main__":
    main()
