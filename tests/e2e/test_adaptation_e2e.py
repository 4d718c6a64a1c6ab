"""Score-first TTT end to end: two gloo ranks give the one-rank result (chunks split as
upstream splits them, gradients summed), and a tiny submission with an ``eval.adapter`` logs
the sliding and the TTT lines, reports the TTT score as its headline, ships the walk in its
bundle and is read back by the leaderboard's log parser as a TTT score."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness.api.by_name import ADAPTATION_MODULE
from harness.leaderboard.logparse import final_score, parse_log
from harness.pipeline.adaptation import evaluate_adaptive
from harness.pipeline.runner import run
from harness.pipeline.submission import build_submission_config
from harness.tools.verify import verify_run
from tests.conftest import write_tiny_submission
from tests.unit.test_adaptation import _gpt, _luts, _tokens

# 3 rows per step split 1 / 2 over two ranks, then 1 row: rank 0 joins that step with zeros.
WALK = dict(window=32, stride=8, chunk_tokens=64, batch_seqs=4, device="cpu")
ADAPTER = dict(lr=0.05, momentum=0.9, epochs=2, grad_clip=1.0, seq_len=16, batch_seqs=3)


def _walk(rank: int = 0, world_size: int = 1):
    from plugins.adapt.sgd_chunks import SgdChunksConfig

    model = _gpt()
    out = evaluate_adaptive(
        model,
        SgdChunksConfig(**ADAPTER).build(),
        _tokens(129, seed=11),
        _luts(),
        rank=rank,
        world_size=world_size,
        **WALK,
    )
    return out, model


def _rank_worker(rank: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{out_dir}/rendezvous",
        rank=rank,
        world_size=2,
        timeout=timedelta(seconds=120),
    )
    torch.set_num_threads(1)
    out, model = _walk(rank, 2)
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    Path(out_dir, f"rank{rank}.json").write_text(
        json.dumps(
            {
                "loss_sum": out.result.loss_sum,
                "tokens": out.result.tokens,
                "bytes": out.result.bytes,
                "chunks": [c.loss_sum for c in out.chunks],
                "weights": weights.tolist(),
            }
        )
    )
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.dist
def test_two_gloo_ranks_equal_one_rank(tmp_path):
    mp.spawn(_rank_worker, args=(str(tmp_path),), nprocs=2, join=True)
    single, model = _walk()
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert (
            (got["tokens"], got["bytes"])
            == (single.result.tokens, single.result.bytes)
            == (128, got["bytes"])
        )
        assert got["loss_sum"] == pytest.approx(single.result.loss_sum, rel=1e-9)
        assert got["chunks"] == pytest.approx([c.loss_sum for c in single.chunks], rel=1e-9)
        assert torch.allclose(torch.tensor(got["weights"], dtype=torch.float64), weights, rtol=0, atol=1e-9)
    assert not torch.equal(weights, torch.cat([p.detach().reshape(-1) for p in _gpt().parameters()]))


TTT_IMPORT = "from plugins.adapt.sgd_chunks import SgdChunksConfig\n"


def test_a_submission_with_an_adapter_reports_the_ttt_score(tmp_path, default_dataset):
    sub = write_tiny_submission(tmp_path / "tiny")
    src = (sub / "train_gpt.py").read_text()
    src = src.replace(
        "from plugins.arch.gpt import GPTConfig\n", "from plugins.arch.gpt import GPTConfig\n" + TTT_IMPORT
    )
    src = src.replace(
        "eval_stride=64, eval_batch_seqs=8)",
        "eval_stride=64, eval_batch_seqs=8,\n"
        "                        adapter=SgdChunksConfig(lr=0.01, epochs=1), ttt_chunk_tokens=256)",
    )
    assert "adapter=SgdChunksConfig" in src
    (sub / "train_gpt.py").write_text(src)
    record = run(
        build_submission_config(sub), submission_dir=sub, run_id="ttt", sets={"train.iterations": "2"}
    )
    run_dir = sub / "runs" / "ttt"
    log = (run_dir / "train.log").read_text()
    assert "ttt:start adapter:sgd_chunks chunk_tokens:256 lr:0.01 momentum:0.9 epochs:1" in log
    sliding_line = next(ln for ln in log.splitlines() if "_roundtrip_sliding_window_exact" in ln)
    ttt_line = next(ln for ln in log.splitlines() if "_roundtrip_ttt " in ln)
    assert "chunks:4" in ttt_line and "ttt_time:" in ttt_line
    saved = json.loads((run_dir / "submission.json").read_text())
    assert saved["val_bpb"] == saved["ttt_val_bpb"] == record["val_bpb"]
    assert saved["sliding_val_bpb"] != saved["ttt_val_bpb"]  # both passes ran; lr 0.01 moved the weights
    assert saved["ttt_time_ms"] > 0 and saved["ttt_adapter"] == "sgd_chunks"
    assert saved["eval_time_ms"] >= saved["ttt_time_ms"]
    assert saved["score_method"].startswith("score_first_ttt adapter:sgd_chunks chunk_tokens:256 stride:64")
    assert saved["val_tokens"] == 1024
    summary = parse_log(log)
    ttt, sliding = final_score(summary, "ttt"), final_score(summary, "sliding")
    assert ttt is not None and ttt.name.endswith("_ttt_exact")
    assert ttt.bpb == pytest.approx(saved["ttt_val_bpb"], abs=1e-8)
    assert sliding is not None and sliding.bpb == pytest.approx(saved["sliding_val_bpb"], abs=1e-8)
    assert sliding_line.split()[0] == sliding.name
    assert f"  {ADAPTATION_MODULE}\n" in (run_dir / "train_gpt_readable.py").read_text()
    # The shipped bundle re-runs the TTT pass eval-only, its adapter settings pinned, same score.
    with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": "1"}):
        report = verify_run(run_dir, timeout_s=600)
    assert report.ok, [c.line() for c in report.failures()]
    assert {"val_bpb", "sliding_val_bpb", "rerun"} <= {c.name for c in report.checks}
