"""Run pgolf's own training phase on CPU in fp32 and return its per-step losses (the other side of
``train_parity.py``; ``tests/unit/test_train_parity.py`` calls it too).

The run is what ``harness.pipeline.runner.pipeline`` does up to the end of training, with two
differences that the parity run needs: the submission's CPU smoke profile is dropped (the
parity configuration sets every value it changes, the same way on both sides), and the autocast
dtype is None, so the forward runs in fp32 (a CPU run otherwise autocasts to bf16). The rest is
the pipeline's own code: the config resolution and its checks, the plugin manager, the default
dataset and the byte tables (`setup.load_data`), then `training.train`: seeding, the model and
optimizer builds, the run plugins, the priming steps and their undoing, the timed loop with its
schedule and the final validation. The losses are read back from the run's ``metrics.jsonl``,
where the trainer logs every step at full precision when ``train.train_log_every`` is 1.

Upstream environment variable names map onto config keys by the project's own table
(`harness.api.config.ENV_OVERRIDES`) plus the model shape names in ``MODEL_KEYS``, which upstream
reads in ``Hyperparameters`` but a pgolf run takes from the submission. A variable in
``UPSTREAM_ONLY`` switches off an upstream behaviour our submission does not have; it is
accepted only at that value and sets nothing here.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from harness.api import config as cfgmod
from harness.api.context import DistInfo
from harness.api.errors import ConfigError
from harness.pipeline.plugin_manager import run_manager
from harness.pipeline.runlog import RunLogger
from harness.pipeline.setup import RunState, load_data
from harness.pipeline.submission import build_submission_config
from harness.pipeline.trainer import grad_accum_steps
from harness.pipeline.training import train

ROOT = Path(__file__).resolve().parents[2]

MODEL_KEYS: dict[str, str] = {
    "NUM_LAYERS": "model.num_layers",
    "MODEL_DIM": "model.model_dim",
    "NUM_HEADS": "model.num_heads",
    "NUM_KV_HEADS": "model.num_kv_heads",
    "MLP_MULT": "model.mlp_mult",
}
"""Upstream model-shape variables -> our config keys (the rest: `harness.api.config.ENV_OVERRIDES`)."""

UPSTREAM_ONLY: dict[str, str] = {
    # P1573 turns on fake int6 rounding in its CastedLinears once the LR scale drops below 0.15.
    # Compiled on GPU, the flag was read when the graph was traced, so the record never trained
    # with it (submissions/12L_recycled: "no late QAT"); the eager CPU run would apply it.
    "LATE_QAT_THRESHOLD": "0",
}
"""Upstream variables with no pgolf key, allowed only at the value that matches our run."""


def config_keys(upstream_env: Mapping[str, str]) -> dict[str, str]:
    """The ``--set`` overrides that give our run the configuration ``upstream_env`` gives upstream's.

    ``DATA_PATH`` and ``TOKENIZER_PATH`` are left out: our run uses the built-in default dataset,
    whose folder the upstream side is pointed at."""
    table = {**cfgmod.ENV_OVERRIDES, **MODEL_KEYS}
    sets = {}
    for name, value in upstream_env.items():
        if name in ("DATA_PATH", "TOKENIZER_PATH"):
            continue
        if name in UPSTREAM_ONLY:
            if str(value) != UPSTREAM_ONLY[name]:
                raise ConfigError(
                    f"parity config: upstream variable {name}={value!r} has no pgolf equivalent; "
                    f"only {UPSTREAM_ONLY[name]!r} matches our run"
                )
            continue
        if name not in table:
            raise ConfigError(f"parity config: upstream variable {name}={value!r} has no pgolf config key")
        sets[table[name]] = str(value)
    return sets


def resolved_config(submission: str, sets: Mapping[str, str]) -> cfgmod.RunConfig:
    """The submission's config without its CPU smoke profile, with ``sets`` applied and checked."""
    config = build_submission_config(ROOT / "submissions" / submission)
    config = replace(config, cpu_profile={})
    return cfgmod.resolve(config, cuda=False, environ={}, sets=dict(sets))


def our_losses(submission: str, sets: Mapping[str, str], run_dir: Path | None = None) -> dict[str, Any]:
    """Train ``submission`` under ``sets`` on CPU in fp32; per-step losses and the final validation.

    Files go to ``run_dir`` (a temporary folder when None)."""
    if run_dir is None:
        with tempfile.TemporaryDirectory(prefix="pgolf_parity_") as tmp:
            return our_losses(submission, sets, Path(tmp))
    config = resolved_config(submission, sets)
    if config.train.train_log_every != 1:
        raise ConfigError("parity run: train.train_log_every must be 1 (TRAIN_LOG_EVERY=1) to see every step")
    manager = run_manager(cfgmod.component_modules(config))
    manager.hook.pg_configure(run=config)
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)
    log = RunLogger(run_dir, 0, echo=False)
    accum = grad_accum_steps(config, dist.world_size)
    run = RunState(config, dist, manager, log, "train_parity", run_dir, None, accum)  # autocast None: fp32
    try:
        scorer = load_data(run)
        train(run, scorer)
    finally:
        log.close()
    events = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    losses = {e["step"]: e["train_loss"] for e in events if e["event"] == "train"}
    if sorted(losses) != list(range(1, config.train.iterations + 1)):
        raise ConfigError(
            f"parity run: logged train steps {sorted(losses)}, expected 1..{config.train.iterations}"
        )
    val = [e for e in events if e["event"] == "val"]
    return {
        "grad_accum_steps": accum,
        "train_loss": [losses[s] for s in sorted(losses)],
        "final_val_loss": val[-1]["val_loss"] if val else None,
        "final_val_bpb": val[-1]["val_bpb"] if val else None,
        "data_path": str(run.data.data_path),
    }


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--submission", required=True)
    ap.add_argument("--env-json", required=True, help="JSON object of upstream variable -> value")
    ap.add_argument("--out", required=True, help="JSON file for the per-step losses")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (both sides alike)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = our_losses(args.submission, config_keys(json.loads(args.env_json)))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
