"""Our first 20 training steps give the upstream scripts' losses, on CPU in fp32 (issue 16 item 2).

The expected losses are not our output: ``benchmarks/upstream_parity/train_parity_<name>.json``
were written by ``benchmarks/upstream_parity/train_parity.py``, which ran the upstream script's
own ``main()`` (the baseline and the T1 record at commit 4908dc4; only device, compile, autocast
and the bf16 cast patched for CPU fp32) and recorded its per-step train losses. Here our training
phase re-runs each file's ``tiny`` configuration (2 layers x 64; the same seed, data, batches,
priming and LR schedule, set through our config keys) and must stay within the file's tolerance
(1e-4) at every step, run at the file's torch thread count. On the machine that recorded them the
two sides agree bit for bit; the tolerance leaves room for another CPU's kernels.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.upstream_parity.train_parity_ours import config_keys, our_losses, resolved_config
from harness.pipeline.shards import file_sha256, list_shards

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / "benchmarks" / "upstream_parity"
UPSTREAM_SHA256 = {
    # train_gpt.py at upstream commit 4908dc46f21ed3fdd08d2fdca285deb2194b9599
    "baseline": "c6cae5e767aa0464e8767620f3bbdb08048c99f4b7ae0f0e146dd9b17e68e673",
    # records/track_10min_16mb/2026-03-20_10L_Int5MLP_MuonWD04_SWA50/train_gpt.py, same commit
    "10L_int5mlp": "4fc7d9cf5ef0575b386e1f348f9c69a7178706f684de785bd05759f71f9bb647",
}
SUBMISSIONS = [name for name in UPSTREAM_SHA256 if (REPORTS / f"train_parity_{name}.json").is_file()]


def _report(name: str) -> dict:
    return json.loads((REPORTS / f"train_parity_{name}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", SUBMISSIONS)
def test_the_reference_is_the_upstream_scripts_run(name):
    report = _report(name)
    assert report["submission"] == name
    assert report["upstream_file_sha256"] == UPSTREAM_SHA256[name]
    for cfg in report["configs"].values():
        # The recorded pgolf keys are the upstream variables under our own mapping.
        assert cfg["our_sets"] == config_keys(cfg["upstream_env"])
        assert cfg["max_abs_diff"] <= report["tolerance"] == 1e-4
        # Not a flat line that any model would match: the loss moves by more than 0.5 nats.
        losses = cfg["upstream_train_loss"]
        assert len(losses) == int(cfg["upstream_env"]["ITERATIONS"]) == 20
        assert max(losses) - min(losses) > 0.5


@pytest.mark.parametrize("name", SUBMISSIONS)
def test_tiny_train_losses_match_upstream(name, default_dataset):
    report = _report(name)
    shards = {Path(p).name: file_sha256(p) for p in list_shards(default_dataset.data_path, "train")}
    if shards != report["dataset"]["train_shards"]:
        pytest.skip(
            "the default dataset built here (from this Python's documentation) is not the one the "
            f"reference was recorded on ({report['dataset']['name']}, Python {report['python']})"
        )
    cfg = report["configs"]["tiny"]
    # At the recorded thread count: T1's orthogonal init runs a QR whose bits follow the threads
    # (at 1 thread instead of 2 its train loss ends 7e-4 away). Only the final validation is cut
    # short; it does not feed back into training.
    previous = torch.get_num_threads()
    torch.set_num_threads(report["threads"])
    try:
        ours = our_losses(name, {**cfg["our_sets"], "eval.val_max_tokens": "1024"})
    finally:
        torch.set_num_threads(previous)
    assert ours["grad_accum_steps"] == cfg["grad_accum_steps"] == 8
    upstream = cfg["upstream_train_loss"]
    assert len(ours["train_loss"]) == len(upstream)
    diffs = [abs(a - b) for a, b in zip(ours["train_loss"], upstream, strict=True)]
    rows = enumerate(zip(ours["train_loss"], upstream, strict=True), 1)
    table = "\n".join(f"step {i}: ours {a:.8f} upstream {b:.8f}" for i, (a, b) in rows)
    assert max(diffs) <= report["tolerance"], table


TINY = {"model.num_layers": "2", "model.model_dim": "64", "model.num_heads": "4", "model.num_kv_heads": "2"}
# named_parameters() of the T1 record's GPT at 2 layers, as upstream's script registers them.
T1_UPSTREAM_ORDER = ["skip_weights", "tok_emb.weight", "bigram.scale", "bigram.embed.weight",
                     "bigram.proj.weight", "smear.gate"] + [
    f"blocks.{i}.{n}" for i in range(2)
    for n in ("attn_scale", "mlp_scale", "resid_mix", "attn.q_gain", "attn.c_q.weight", "attn.c_k.weight",
              "attn.c_v.weight", "attn.proj.weight", "mlp.fc.weight", "mlp.proj.weight")
]  # fmt: skip


def test_gradient_clip_sums_in_upstream_t1_order():
    # T1 registers bigram and smear before its blocks; ours after them (see GPT.__init__).
    model = resolved_config("10L_int5mlp", TINY).model.build(1024)
    names = {id(p): n for n, p in model.named_parameters()}
    assert [n for n, _ in model.named_parameters()] != T1_UPSTREAM_ORDER
    assert [names[id(p)] for p in model.clip_order()] == T1_UPSTREAM_ORDER


def test_baseline_clip_order_is_its_registration_order():
    model = resolved_config("baseline", TINY).model.build(1024)
    assert [id(p) for p in model.clip_order()] == [id(p) for p in model.parameters()]
