"""The evaluation cap is checked between batches (pgolf issue 7).

Unit level: a model whose forward advances a fake clock by one "second" per batch meets a
deadline after exactly k batches, and `EvalTimeLimit` names the evaluation and k; one test
uses real sleeps. Two gloo processes with unequal batch counts stop at the same batch when
only one of them is past its deadline. End to end: a tiny submission with a tiny
``eval.max_eval_seconds`` finishes promptly with an invalid submission.json and no score.
"""

from __future__ import annotations

import json
import math
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import harness.pipeline.eval as heval
from harness.api.errors import EvalTimeLimit, PgolfError
from harness.pipeline.bpb import ByteLUTs
from harness.pipeline.eval import (
    evaluate_sliding,
    evaluate_sliding_reference,
    evaluate_standard,
    sliding_windows,
)

V = 8


def _luts() -> ByteLUTs:
    return ByteLUTs(
        base_bytes=torch.tensor([0, 1, 2, 3, 1, 2, 3, 1], dtype=torch.int32),
        has_leading_space=torch.tensor([False, True, False, True, False, False, True, False]),
        is_boundary=torch.tensor([True] + [False] * 7),
        vocab_size=V,
    )


def _tokens(n: int) -> torch.Tensor:
    return torch.randint(0, V, (n,), generator=torch.Generator().manual_seed(n), dtype=torch.int64)


class FakeClock:
    """Replaces ``harness.pipeline.eval.time``: ``perf_counter`` returns ``now``, which models advance."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class TickingLM(nn.Module):
    """Uniform logits; every forward (or hidden) call costs ``tick`` seconds on ``clock``
    (fake) or really sleeps ``sleep`` seconds."""

    def __init__(self, clock: FakeClock | None = None, tick: float = 1.0, sleep: float = 0.0) -> None:
        super().__init__()
        self.clock, self.tick, self.sleep = clock, tick, sleep
        self.calls = 0

    def _cost(self) -> None:
        self.calls += 1
        if self.clock is not None:
            self.clock.now += self.tick
        if self.sleep:
            time.sleep(self.sleep)

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        self._cost()
        return torch.zeros(*ids.shape, 4, dtype=torch.float64)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*hidden.shape[:-1], V, dtype=torch.float64)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.logits(self.hidden(ids))


def _run(kind: str, model: nn.Module, **kw):
    tokens = _tokens(8 * 10 + 1)
    if kind == "standard":
        return evaluate_standard(model, tokens, _luts(), seq_len=8, batch_seqs=1, device="cpu", **kw)
    fn = evaluate_sliding if kind == "sliding" else evaluate_sliding_reference
    return fn(model, tokens, _luts(), window=8, stride=4, batch_seqs=2, device="cpu", **kw)


def _batches(kind: str) -> int:
    return 10 if kind == "standard" else math.ceil(len(sliding_windows(80, 8, 4)) / 2)


KINDS = ["standard", "sliding", "reference"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [0, 1, 3])
def test_deadline_stops_after_k_batches(monkeypatch, kind: str, k: int) -> None:
    clock = FakeClock()
    monkeypatch.setattr(heval, "time", clock)
    model = TickingLM(clock)
    with pytest.raises(EvalTimeLimit) as info:
        _run(kind, model, deadline=k - 0.5)
    assert model.calls == k
    message = str(info.value)
    name = "standard" if kind == "standard" else "sliding"
    assert message.startswith(
        f"{name} evaluation stopped at its time cap after {k} of {_batches(kind)} batches"
    )
    done = k * 8 if kind == "standard" else (8 + 4 * (2 * k - 1) if k else 0)  # first window scores all 8
    assert f"({done} of 80 targets on rank 0)" in message
    assert isinstance(info.value, PgolfError)


@pytest.mark.parametrize("kind", KINDS)
def test_deadline_not_reached_changes_nothing(monkeypatch, kind: str) -> None:
    free = _run(kind, TickingLM())
    clock = FakeClock()
    monkeypatch.setattr(heval, "time", clock)
    capped = _run(kind, TickingLM(clock), deadline=_batches(kind) - 0.5)  # passed only after the last batch
    assert (capped.loss_sum, capped.tokens, capped.bytes) == (free.loss_sum, free.tokens, free.bytes)
    assert capped.val_loss == pytest.approx(math.log(V), rel=1e-12)


def test_real_sleeps_stop_promptly() -> None:
    model = TickingLM(sleep=0.1)
    t0 = time.perf_counter()
    with pytest.raises(
        EvalTimeLimit, match=r"sliding evaluation stopped .* it had 0\.2\d\ds left before the deadline"
    ):
        _run("sliding", model, deadline=t0 + 0.25)
    # ~3 batches of 0.1 s, not the 10 of the whole pass; the margin absorbs a loaded machine.
    assert 1 <= model.calls < _batches("sliding")
    assert time.perf_counter() - t0 < 0.9


def _dist_worker(rank: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{out_dir}/rendezvous",
        rank=rank,
        world_size=2,
        timeout=timedelta(seconds=60),
    )
    torch.set_num_threads(1)
    clock = FakeClock()
    heval.time = clock  # this process only
    tokens = _tokens(46)  # 45 targets, window 8 stride 4: 11 windows -> 5 and 6, 3 batches each
    results: dict[str, object] = {}
    kw = dict(window=8, stride=4, batch_seqs=2, device="cpu", rank=rank, world_size=2)
    # 21 targets: 5 windows -> 2 and 3, i.e. 1 and 2 batches; with a deadline the idle rank
    # joins the second round's agreement instead of leaving the other one waiting.
    whole = evaluate_sliding(TickingLM(clock), tokens[:22], _luts(), deadline=1e9, **kw)
    results["uneven"] = [whole.loss_sum, whole.tokens]
    # Only rank 0's clock runs (1 s per batch, deadline 1.5): both ranks stop before batch 2.
    clock.now = 0.0
    model = TickingLM(clock, tick=1.0 if rank == 0 else 0.0)
    try:
        evaluate_sliding(model, tokens, _luts(), deadline=1.5, **kw)
        results["stopped"] = None
    except EvalTimeLimit as exc:
        results["stopped"] = str(exc)
    results["calls"] = model.calls
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.dist
def test_ranks_stop_together(tmp_path) -> None:
    mp.spawn(_dist_worker, args=(str(tmp_path),), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    single = evaluate_sliding(
        TickingLM(), _tokens(46)[:22], _luts(), window=8, stride=4, batch_seqs=2, device="cpu"
    )
    assert len(sliding_windows(21, 8, 4)) == 5
    for got in ranks:
        assert got["uneven"][1] == single.tokens == 21
        assert got["uneven"][0] == pytest.approx(single.loss_sum, rel=1e-12)
        assert got["calls"] == 2
        assert "after 2 of 3 batches" in got["stopped"] and "ranks agree" in got["stopped"]


def test_run_with_tiny_eval_cap_is_invalid_and_unscored(tmp_path, default_dataset) -> None:
    from harness.pipeline.runner import run
    from harness.pipeline.submission import build_submission_config
    from tests.conftest import write_tiny_submission

    sub = write_tiny_submission(tmp_path / "tiny")
    sets = {
        "train.iterations": "2",
        "train.warmup_steps": "0",
        "train.val_loss_every": "0",
        "eval.max_eval_seconds": "0.000001",
    }
    t0 = time.perf_counter()
    record = run(build_submission_config(sub), submission_dir=sub, run_id="cap", sets=sets)
    assert time.perf_counter() - t0 < 120
    run_dir = sub / "runs" / "cap"
    saved = json.loads((run_dir / "submission.json").read_text())
    assert saved["valid"] is False and record["valid"] is False
    reasons = saved["invalid_reasons"]
    assert len(reasons) == 1 and reasons[0].startswith(
        "evaluation stopped at the cap of 1e-06s: standard evaluation"
    )
    assert "after 0 of" in reasons[0]
    for key in ("val_bpb", "val_loss", "roundtrip_val_bpb", "sliding_val_bpb"):
        assert saved[key] is None, key  # never a partial number presented as the score
    assert saved["val_tokens"] == 0
    log = (run_dir / "train.log").read_text()
    assert "!!! EVAL OVER TIME: standard evaluation stopped" in log
    assert "skipped: shuffled baseline, sliding_window" in log
    assert "_roundtrip val_loss" not in log and "_sliding_window val_loss" not in log
    assert "BASELINE CHECK FAILED" not in log  # no model CE: the cap, not the model, is the cause


def test_run_with_sliding_cut_keeps_roundtrip_but_no_headline(tmp_path, default_dataset, monkeypatch) -> None:
    from harness.pipeline.runner import run
    from harness.pipeline.scorer import Scorer
    from harness.pipeline.submission import build_submission_config
    from tests.conftest import write_tiny_submission

    real = Scorer.sliding
    monkeypatch.setattr(
        Scorer, "sliding", lambda self, model, deadline=None: real(self, model, deadline=-math.inf)
    )
    # This fault injection is exactly what the run's tamper check refuses (issue 11); switch it off here.
    monkeypatch.setattr("harness.pipeline.integrity.check_scoring_code", lambda when: None)
    sub = write_tiny_submission(tmp_path / "tiny")
    sets = {"train.iterations": "2", "train.warmup_steps": "0", "train.val_loss_every": "0"}
    record = run(build_submission_config(sub), submission_dir=sub, run_id="cut", sets=sets)
    saved = json.loads((sub / "runs" / "cut" / "submission.json").read_text())
    assert saved["valid"] is False and "sliding evaluation stopped" in saved["invalid_reasons"][0]
    assert (
        saved["roundtrip_val_bpb"] == pytest.approx(record["roundtrip_val_bpb"])
        and saved["roundtrip_val_bpb"] > 0
    )
    assert saved["val_bpb"] is None and saved["sliding_val_bpb"] is None
    assert saved["score_method"].startswith("sliding_window")
