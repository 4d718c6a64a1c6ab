"""Training-loss parity with an upstream ``train_gpt.py``: the first N steps, CPU, fp32 (issue 16).

Usage (README.md in this folder says where to fetch the upstream file)::

    python benchmarks/upstream_parity/train_parity.py --upstream up_baseline.py --submission baseline \
        [--steps 20] [--threads 2]

For each parity configuration of the submission (``CONFIGS``: a reduced shape for the record,
and a tiny one that ``tests/unit/test_train_parity.py`` re-runs in seconds), both sides train
from the same seed on the built-in default dataset (its shards are in upstream's format; built on
first use under ``$PGOLF_CACHE_DIR``), each in its own process:

* upstream: ``train_parity_upstream.py`` runs the upstream script's own ``main()`` with the
  configuration as upstream environment variables (its docstring lists exactly what is patched
  for CPU and fp32, and how the losses are read);
* pgolf: ``train_parity_ours.py`` runs our training phase with the same values as config keys
  (`harness.api.config.ENV_OVERRIDES` and its model-shape table), fp32, no CPU smoke profile.

Every configuration runs without the wallclock cap (``MAX_WALLCLOCK_SECONDS=0``), because upstream
then schedules the LR by step (the capped warmdown reads the clock, which two processes never
share): full LR, then a linear warmdown over the last ``WARMDOWN_ITERS`` steps. ``WARMUP_STEPS``
are upstream's compile-priming steps, undone before step 1 on both sides (not an LR warm-up).
Upstream's per-step losses are also checked against the 4-decimal ``train_loss`` lines its own
log prints, so the recording cannot drift from what upstream reports. Both sides run at the same
torch thread count (``--threads``, recorded): the orthogonal init's QR gives other bits at another.

Writes ``train_parity_<submission>.json`` (configuration, per-step losses of both sides, max
|diff|, final validation loss, the upstream file's sha256, the train shard's sha256, torch and
Python versions) and ``train_parity_<submission>.txt`` (the same as tables) beside this file, and
exits non-zero when a configuration's max |diff| exceeds ``TOLERANCE``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.upstream_parity.train_parity_ours import config_keys  # noqa: E402
from harness.datasets.default import ensure_default_dataset  # noqa: E402
from harness.pipeline.shards import file_sha256, list_shards  # noqa: E402

TOLERANCE = 1e-4
"""Largest |train loss difference| allowed at any step (issue 16)."""

_COMMON = {
    "SEED": "1337",
    "MAX_WALLCLOCK_SECONDS": "0",
    "VAL_LOSS_EVERY": "0",
    "TRAIN_LOG_EVERY": "1",
}

CONFIGS: dict[str, dict[str, dict[str, str]]] = {
    "baseline": {
        # The baseline's 9 layers (U-Net skips over 4 pairs), 8 query / 4 KV heads and 2x MLP at a
        # quarter of its width; rows of 256 tokens, 8 micro-batches of 8 rows per step.
        "reduced": {
            **_COMMON,
            "NUM_LAYERS": "9",
            "MODEL_DIM": "128",
            "NUM_HEADS": "8",
            "NUM_KV_HEADS": "4",
            "MLP_MULT": "2",
            "TRAIN_SEQ_LEN": "256",
            "TRAIN_BATCH_TOKENS": "16384",
            "WARMUP_STEPS": "5",
            "WARMDOWN_ITERS": "10",
        },
        # For the unit test: 2 layers x 64, one 64-token row per micro-batch (64: our config
        # checks refuse a sliding-window stride, 64 by default, longer than the rows).
        "tiny": {
            **_COMMON,
            "NUM_LAYERS": "2",
            "MODEL_DIM": "64",
            "NUM_HEADS": "4",
            "NUM_KV_HEADS": "2",
            "MLP_MULT": "2",
            "TRAIN_SEQ_LEN": "64",
            "TRAIN_BATCH_TOKENS": "512",
            "WARMUP_STEPS": "2",
            "WARMDOWN_ITERS": "10",
        },
    },
    "10L_int5mlp": {
        # T1's 10 layers, 3x MLP, BigramHash(10240, 128), SmearGate and orthogonal init at a quarter
        # of its width; the rest as the baseline's reduced shape. SEED: the record defaults to 42.
        "reduced": {
            **_COMMON,
            "NUM_LAYERS": "10",
            "MODEL_DIM": "128",
            "NUM_HEADS": "8",
            "NUM_KV_HEADS": "4",
            "MLP_MULT": "3",
            "TRAIN_SEQ_LEN": "256",
            "TRAIN_BATCH_TOKENS": "16384",
            "WARMUP_STEPS": "5",
            "WARMDOWN_ITERS": "10",
        },
        "tiny": {
            **_COMMON,
            "NUM_LAYERS": "2",
            "MODEL_DIM": "64",
            "NUM_HEADS": "4",
            "NUM_KV_HEADS": "2",
            "MLP_MULT": "3",
            "TRAIN_SEQ_LEN": "64",
            "TRAIN_BATCH_TOKENS": "512",
            "WARMUP_STEPS": "2",
            "WARMDOWN_ITERS": "10",
        },
    },
    "12L_recycled": {
        # P1573's 12 layers (3 and 4 replayed), 3x LeakyReLU(0.5)^2 MLP, BigramHash(2048, 128),
        # value embeddings on 10-11, XSA on the last 4, partial RoPE 16 at a quarter of its width
        # (16-dim heads, so RoPE covers all of them); the rest as the baseline's reduced shape.
        # LATE_QAT_THRESHOLD=0: see train_parity_ours.UPSTREAM_ONLY.
        "reduced": {
            **_COMMON,
            "NUM_LAYERS": "12",
            "MODEL_DIM": "128",
            "NUM_HEADS": "8",
            "NUM_KV_HEADS": "4",
            "MLP_MULT": "3",
            "TRAIN_SEQ_LEN": "256",
            "EVAL_SEQ_LEN": "256",
            "TRAIN_BATCH_TOKENS": "16384",
            "WARMUP_STEPS": "5",
            "WARMDOWN_ITERS": "10",
            "LATE_QAT_THRESHOLD": "0",
        },
        # The layer numbers of its components are fixed (no config key), so the tiny shape keeps
        # 12 layers and narrows them: 64 wide, 4 query / 2 KV heads of 16 dims.
        "tiny": {
            **_COMMON,
            "NUM_LAYERS": "12",
            "MODEL_DIM": "64",
            "NUM_HEADS": "4",
            "NUM_KV_HEADS": "2",
            "MLP_MULT": "3",
            "TRAIN_SEQ_LEN": "64",
            "EVAL_SEQ_LEN": "64",
            "TRAIN_BATCH_TOKENS": "512",
            "WARMUP_STEPS": "2",
            "WARMDOWN_ITERS": "10",
            "LATE_QAT_THRESHOLD": "0",
        },
    },
}

_UPSTREAM_TRAIN_LINE = re.compile(r"^step:(\d+)/\d+ train_loss:([0-9.naif+-]+) ", re.MULTILINE)


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without torchrun's variables (both sides run one process), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return {**env, **extra}


def _run_child(cmd: list[str], env: dict[str, str], cwd: Path, what: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise SystemExit(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout, time.perf_counter() - t0


def _check_against_log(losses: list[float], log: str) -> None:
    """Upstream's recorded losses must round to the 4-decimal values its own log printed."""
    printed = {int(m.group(1)): float(m.group(2)) for m in _UPSTREAM_TRAIN_LINE.finditer(log)}
    if sorted(printed) != list(range(1, len(losses) + 1)):
        raise SystemExit(
            f"upstream's log printed train_loss for steps {sorted(printed)}, expected 1..{len(losses)}"
        )
    for step, loss in enumerate(losses, 1):
        if abs(loss - printed[step]) > 0.5e-4 + 1e-9:
            raise SystemExit(
                f"step {step}: recorded upstream loss {loss!r} but its log printed {printed[step]}"
            )


def run_config(upstream: Path, submission: str, env: dict[str, str], threads: int) -> dict[str, Any]:
    """Both sides under one configuration; the per-step comparison."""
    data = ensure_default_dataset(progress=True)
    up_env = {**env, "DATA_PATH": str(data.data_path), "TOKENIZER_PATH": str(data.tokenizer_path)}
    with tempfile.TemporaryDirectory(prefix="pgolf_train_parity_") as tmp:
        work = Path(tmp)
        up_log, up_s = _run_child(
            [sys.executable, str(HERE / "train_parity_upstream.py"), "--upstream", str(upstream.resolve()),
             "--out", str(work / "upstream.json"), "--threads", str(threads)],
            _child_env(up_env), work, "upstream run",
        )  # fmt: skip
        _, ours_s = _run_child(
            [sys.executable, str(HERE / "train_parity_ours.py"), "--submission", submission,
             "--env-json", json.dumps(env), "--out", str(work / "ours.json"), "--threads", str(threads)],
            _child_env({}), ROOT, "pgolf run",
        )  # fmt: skip
        up = json.loads((work / "upstream.json").read_text(encoding="utf-8"))
        ours = json.loads((work / "ours.json").read_text(encoding="utf-8"))
    _check_against_log(up["train_loss"], up_log)
    if Path(ours["data_path"]).resolve() != Path(data.data_path).resolve():
        raise SystemExit(f"pgolf trained on {ours['data_path']}, upstream on {data.data_path}")
    if up["grad_accum_steps"] != ours["grad_accum_steps"]:
        raise SystemExit(
            f"micro-batches per step: upstream {up['grad_accum_steps']}, pgolf {ours['grad_accum_steps']}"
        )
    diffs = [abs(a - b) for a, b in zip(up["train_loss"], ours["train_loss"], strict=True)]
    return {
        "upstream_env": env,
        "our_sets": config_keys(env),
        "grad_accum_steps": up["grad_accum_steps"],
        "upstream_train_loss": up["train_loss"],
        "our_train_loss": ours["train_loss"],
        "abs_diff": diffs,
        "max_abs_diff": max(diffs),
        "upstream_final_val_loss": up["final_val_loss"],
        "our_final_val_loss": ours["final_val_loss"],
        "seconds": {"upstream": round(up_s, 1), "pgolf": round(ours_s, 1)},
    }


def dataset_record() -> dict[str, Any]:
    """The default dataset's train shards (name and sha256): the data both sides stream."""
    data = ensure_default_dataset(progress=False)
    shards = list_shards(data.data_path, "train")
    return {
        "name": Path(data.data_path).name,
        "train_shards": {Path(s).name: file_sha256(s) for s in shards},
        "tokenizer_sha256": file_sha256(data.tokenizer_path),
    }


def render(report: dict[str, Any]) -> str:
    """The report as plain-text tables, one per configuration."""
    lines = [
        f"Training-loss parity, {report['submission']} vs upstream train_gpt.py "
        f"(sha256 {report['upstream_file_sha256'][:16]}...), CPU fp32, torch {report['torch']}, "
        f"{report['threads']} threads, dataset {report['dataset']['name']}",
        f"command: {report['command']}",
    ]
    for name, cfg in report["configs"].items():
        env = " ".join(f"{k}={v}" for k, v in cfg["upstream_env"].items())
        lines += ["", f"[{name}] {env}", f"{'step':>4}  {'upstream':>12}  {'pgolf':>12}  {'|diff|':>9}"]
        rows = zip(cfg["upstream_train_loss"], cfg["our_train_loss"], cfg["abs_diff"], strict=True)
        for step, (up, ours, diff) in enumerate(rows, 1):
            lines.append(f"{step:>4}  {up:>12.8f}  {ours:>12.8f}  {diff:>9.2e}")
        verdict = "PASS" if cfg["max_abs_diff"] <= report["tolerance"] else "FAIL"
        lines.append(f"max |diff| {cfg['max_abs_diff']:.2e} (tolerance {report['tolerance']:.0e}): {verdict}")
        up_val, our_val = cfg["upstream_final_val_loss"], cfg["our_final_val_loss"]
        if up_val is not None and our_val is not None:
            lines.append(f"final val_loss: upstream {up_val:.8f}, pgolf {our_val:.8f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, type=Path, help="the upstream train_gpt.py to compare with")
    ap.add_argument("--submission", default="baseline", choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=20, help="training steps compared (ITERATIONS)")
    ap.add_argument(
        "--threads", type=int, default=2, help="torch threads on both sides (orthogonal-init bits follow it)"
    )
    ap.add_argument("--configs", nargs="*", help="configuration names (default: all of the submission's)")
    ap.add_argument("--out-dir", type=Path, default=HERE, help="where the .json and .txt go")
    args = ap.parse_args()
    if not args.upstream.is_file():
        raise SystemExit(f"--upstream {args.upstream}: no such file")
    if args.steps < 1:
        raise SystemExit(f"--steps {args.steps}: expected at least 1")
    known = CONFIGS[args.submission]
    names = args.configs or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"--configs {unknown}: {args.submission} has {sorted(known)}")
    report: dict[str, Any] = {
        "command": f"python benchmarks/upstream_parity/train_parity.py --upstream train_gpt.py "
        f"--submission {args.submission} --steps {args.steps} --threads {args.threads}",
        "submission": args.submission,
        "upstream_file_sha256": hashlib.sha256(args.upstream.read_bytes()).hexdigest(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "tolerance": TOLERANCE,
        "dataset": dataset_record(),
        "configs": {},
    }
    for name in names:
        env = {**known[name], "ITERATIONS": str(args.steps)}
        print(f"[{name}] running both sides ...", file=sys.stderr, flush=True)
        report["configs"][name] = run_config(args.upstream, args.submission, env, args.threads)
    stem = args.out_dir / f"train_parity_{args.submission}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    text = render(report)
    stem.with_suffix(".txt").write_text(text, encoding="utf-8")
    print(text, end="")
    worst = max(cfg["max_abs_diff"] for cfg in report["configs"].values())
    if worst > TOLERANCE:
        raise SystemExit(f"max |diff| {worst:.2e} exceeds {TOLERANCE:.0e}")


if __name__ == "__main__":
    main()
