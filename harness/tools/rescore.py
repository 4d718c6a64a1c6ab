"""Re-score an artifact from its file alone: read it, rebuild the model, evaluate.

The artifact's manifest names its quantizer, compressor and architecture (with their
configs); all three are looked up by name in the registry of the built-in and installed
plugins, so a file can never make the scorer import arbitrary code, and nothing is
unpickled. Scoring is the same harness code a run uses (`harness.pipeline.eval`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.api.errors import ArtifactError
from harness.pipeline.artifact import config_from_json, load_state_dict
from harness.pipeline.bpb import build_byte_luts, tokenizer_sha256
from harness.pipeline.data_binding import check_data_binding
from harness.pipeline.eval import evaluate_sliding, evaluate_standard
from harness.pipeline.plugin_manager import PluginManager, full_manager
from harness.pipeline.shards import load_validation_tokens


def model_from_artifact(
    path: Path, manager: PluginManager | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The dequantized model stored in ``path`` and the artifact manifest."""
    manager = manager or full_manager()
    state, manifest = load_state_dict(Path(path), manager.registry)
    extras = manifest.get("extras", {})
    if "arch" not in extras or "vocab_size" not in extras:
        raise ArtifactError(f"{path}: manifest extras lack 'arch'/'vocab_size'; cannot rebuild the model")
    comp = manager.registry.get("arch", extras["arch"])
    cfg = config_from_json(comp.config_cls, extras.get("arch_config", {}), manager.registry)
    model = cfg.build(int(extras["vocab_size"]))
    model.load_state_dict(state, strict=True)
    return model, manifest


def rescore(
    artifact: Path,
    *,
    data_path: Path,
    tokenizer_path: Path,
    seq_len: int = 1024,
    stride: int = 64,
    batch_seqs: int = 32,
    val_max_tokens: int = 0,
    device: str = "cpu",
    autocast_dtype: torch.dtype | None = torch.bfloat16,
    check_binding: bool = False,
) -> dict[str, float]:
    """Standard and (if ``0 < stride < seq_len``) sliding-window BPB of an artifact file.

    Use the same ``seq_len``, dataset, ``val_max_tokens``, device and dtype as the run to
    reproduce its ``final_*`` lines. ``check_binding`` refuses a tokenizer that did not make the
    shards, as a run does (`harness.pipeline.data_binding`; `pgolf rescore` sets it).
    """
    model, manifest = model_from_artifact(artifact)
    dev = torch.device(device)
    model = model.to(dev).eval()
    luts = build_byte_luts(tokenizer_path, int(manifest["extras"]["vocab_size"]))
    if check_binding:
        check_data_binding(data_path, tokenizer_path, tokenizer_sha256(tokenizer_path), luts.vocab_size)
    val = load_validation_tokens(data_path, seq_len, luts.vocab_size, max_targets=val_max_tokens)
    common = dict(device=dev, autocast_dtype=autocast_dtype)
    std = evaluate_standard(model, val, luts, seq_len=seq_len, batch_seqs=batch_seqs, **common)
    out = {"val_loss": std.val_loss, "val_bpb": std.val_bpb, "tokens": std.tokens, "bytes": std.bytes}
    if 0 < stride < seq_len:
        sw = evaluate_sliding(
            model, val, luts, window=seq_len, stride=stride, batch_seqs=batch_seqs, **common
        )
        out.update(sliding_val_loss=sw.val_loss, sliding_val_bpb=sw.val_bpb)
    return out
