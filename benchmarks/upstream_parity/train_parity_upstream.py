"""Run an upstream ``train_gpt.py``'s own ``main()`` on CPU in fp32 and record its training losses.

One side of ``train_parity.py`` (which starts this file in a child process, so nothing set here
reaches the other side). The configuration comes from the upstream environment variables the
parent sets (``NUM_LAYERS``, ``ITERATIONS``, ``DATA_PATH``, ...), read by upstream's own
``Hyperparameters`` when the module is imported. Everything else is upstream's code: the model,
the optimizer split and its Muon, the data loader over the shards, the priming steps and their
undoing, the LR schedule and momentum warm-up, the step loop and the loss averaging over
micro-batches, and the final validation.

What this file changes, only where CPU cannot run upstream's code or the run must be fp32. The
name ``torch`` inside the upstream module (and nowhere else) is a thin proxy that forwards every
attribute to the real torch except:

* ``torch.device(...)`` -> the CPU device (upstream hard-codes ``cuda``);
* ``torch.cuda``: ``is_available()`` says yes (upstream refuses to start otherwise),
  ``set_device`` and ``synchronize`` do nothing, ``manual_seed_all`` is the real one (a no-op
  without CUDA); ``max_memory_allocated()`` ends the run (below);
* ``torch.compile(f, ...)`` -> ``f`` (graph capture is a speed-up; eager runs the same ops);
* ``torch.autocast(...)`` -> no context, so the forward runs in fp32 instead of bf16.

Records that attend through FlashAttention 3 (P1573's ``flash_attn_3_func``, imported from
``flash_attn_interface``, which has no CPU build) get ``_cpu_flash_attn`` in its place: the same
causal attention by ``F.scaled_dot_product_attention`` with ``enable_gqa`` (query head h reads KV
head h // (H / Hkv), FlashAttention's GQA grouping), scale 1/sqrt(head_dim), on the (B, T, H, D)
layout FlashAttention takes and returns. Only the summation order inside the kernel differs from
the GPU's.

Also: upstream's ``GPT.bfloat16`` is replaced by the identity, so the embedding table stays fp32
like everything else (upstream casts the model to bf16 and restores all but the embedding to
fp32); upstream's ``nvidia-smi`` call gets an empty answer (``subprocess`` in the module is a
proxy too). The Newton-Schulz iteration keeps upstream's own bf16 arithmetic (it casts
explicitly), as ours does. Without ``RANK``/``WORLD_SIZE`` upstream runs one process, no DDP, 8
micro-batches per step. Its fused Adam runs as written (PyTorch has a CPU fused Adam).

Recording: upstream prints ``train_loss`` with 4 decimals only, so ``GPT.forward`` is wrapped to
keep every loss a forward returns while gradients are on (training and priming; validation runs
under ``inference_mode``). The first ``WARMUP_STEPS * accum`` are the priming steps that
upstream then undoes; each later step's loss is rebuilt exactly as upstream computes it (fp32
zero, add each micro-batch's loss, divide by ``accum``). ``eval_val`` is wrapped to keep the
final validation loss. The run ends when upstream asks for its peak memory (its first statement
after the training loop): serialization, quantization and the roundtrip evaluation are not
part of this comparison.

Usage (normally through ``train_parity.py``)::

    DATA_PATH=... TOKENIZER_PATH=... NUM_LAYERS=2 ... \
        python train_parity_upstream.py --upstream up_baseline.py --out losses.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upstream_module import load_upstream  # noqa: E402


class TrainingDone(Exception):
    """Raised where upstream's main() reaches the end of its training loop."""


class _Forwarding:
    """Every attribute of ``real``, except the ones given here."""

    def __init__(self, real: Any, **overrides: Any) -> None:
        self._real = real
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _training_done(*args: Any, **kwargs: Any) -> int:
    raise TrainingDone


def _cpu_torch() -> _Forwarding:
    cuda = _Forwarding(
        torch.cuda,
        is_available=lambda: True,
        set_device=lambda *a, **k: None,
        synchronize=lambda *a, **k: None,
        manual_seed_all=torch.cuda.manual_seed_all,
        max_memory_allocated=_training_done,
    )
    return _Forwarding(
        torch,
        device=lambda *a, **k: torch.device("cpu"),
        cuda=cuda,
        compile=lambda fn=None, **k: fn,
        autocast=lambda *a, **k: contextlib.nullcontext(),
    )


def _cpu_flash_attn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False, **kw: Any):
    """FlashAttention's ``flash_attn_func(q, k, v, causal=...)`` on CPU: (B, T, H, D) in and out."""
    if kw or not causal:
        raise SystemExit(f"flash_attn_func stand-in: only causal=True without options is covered, got {kw}")
    y = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
    )
    return y.transpose(1, 2)


def _no_nvidia_smi(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(args, 0, stdout="", stderr="")


class Recorder:
    """The losses upstream's forward returns with gradients on, and its validation results."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.val: list[tuple[float, float]] = []

    def install(self, up: Any) -> None:
        forward, eval_val = up.GPT.forward, up.eval_val

        def recording_forward(model: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            loss = forward(model, *args, **kwargs)
            if torch.is_grad_enabled():
                self.losses.append(loss.detach().clone())
            return loss

        def recording_eval(*args: Any, **kwargs: Any) -> tuple[float, float]:
            result = eval_val(*args, **kwargs)
            self.val.append((float(result[0]), float(result[1])))
            return result

        up.GPT.forward = recording_forward
        up.eval_val = recording_eval

    def step_losses(self, warmup_steps: int, iterations: int) -> tuple[int, list[float]]:
        """(micro-batches per step, the mean loss of every timed step), as upstream averages."""
        steps = warmup_steps + iterations
        if steps <= 0 or len(self.losses) % steps:
            raise SystemExit(
                f"recorded {len(self.losses)} training forwards, not a multiple of "
                f"WARMUP_STEPS + ITERATIONS = {steps}: the run did not go as this script expects"
            )
        accum = len(self.losses) // steps
        timed = self.losses[warmup_steps * accum :]
        out = []
        for i in range(iterations):
            total = torch.zeros((), dtype=torch.float32)
            for loss in timed[i * accum : (i + 1) * accum]:
                total += loss
            out.append(float(total / accum))
        return accum, out


def run_upstream(path: str) -> dict[str, Any]:
    """Import the upstream script (its Hyperparameters read the environment), patch it, run main()."""
    up = load_upstream(path)
    up.torch = _cpu_torch()
    up.subprocess = _Forwarding(subprocess, run=_no_nvidia_smi)
    up.GPT.bfloat16 = lambda self: self
    if hasattr(up, "flash_attn_3_func"):
        up.flash_attn_3_func = _cpu_flash_attn
    recorder = Recorder()
    recorder.install(up)
    args = up.Hyperparameters()
    try:
        up.main()
    except TrainingDone:
        pass
    else:
        raise SystemExit("upstream main() returned without logging its peak memory: no end of training seen")
    accum, losses = recorder.step_losses(args.warmup_steps, args.iterations)
    return {
        "grad_accum_steps": accum,
        "train_loss": losses,
        "final_val_loss": recorder.val[-1][0] if recorder.val else None,
        "final_val_bpb": recorder.val[-1][1] if recorder.val else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="an upstream train_gpt.py (plain or lzma-wrapped)")
    ap.add_argument("--out", required=True, help="JSON file for the per-step losses")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (both sides alike)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = run_upstream(args.upstream)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
