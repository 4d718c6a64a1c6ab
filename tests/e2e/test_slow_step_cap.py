"""The wallclock cap holds when steps are slow: with 0.3 s steps (an observer sleeps in
``pg_step_end``, which is training time) and a 1 s cap, the run stops on the first step
that reaches the cap, so its final ``train_time`` overshoots the cap by less than one step
(the rule of upstream ``train_gpt.py``: check after each step, stop once over)."""

from __future__ import annotations

import re

from harness.pipeline.runner import run
from harness.pipeline.submission import build_submission_config
from tests.conftest import write_tiny_submission

SLEEP_S = 0.3
CAP_S = 1.0

SLOW = f'''

import time
from dataclasses import dataclass
from harness.api.hooks import hookimpl


@dataclass(frozen=True, kw_only=True)
class SlowStepConfig:
    seconds: float = {SLEEP_S}
    """How long each optimizer step is made to last, at least."""

    def build(self):
        return SlowStep(self.seconds)


class SlowStep:
    def __init__(self, seconds):
        self.seconds = seconds

    @hookimpl
    def pg_step_end(self, ctx):
        time.sleep(self.seconds)
'''


def test_slow_steps_stop_within_one_step_of_the_cap(tmp_path, default_dataset):
    sub = write_tiny_submission(tmp_path / "slow")
    src = (sub / "train_gpt.py").read_text()
    src = src.replace("def build_config()", SLOW + "\n\ndef build_config()", 1)
    src = src.replace("cpu_profile={},", "cpu_profile={}, plugins=(SlowStepConfig(),),")
    (sub / "train_gpt.py").write_text(src)
    sets = {
        "train.iterations": "200",
        "train.warmup_steps": "0",
        "train.val_loss_every": "0",
        "train.train_log_every": "1",
        "train.max_wallclock_seconds": str(CAP_S),
    }
    run(build_submission_config(sub), submission_dir=sub, run_id="s", sets=sets)
    log = (sub / "runs" / "s" / "train.log").read_text()
    times = {
        int(s): float(t)
        for s, t in re.findall(r"^step:(\d+)/200 train_loss:\S+ train_time:(\d+)ms", log, flags=re.M)
    }
    stop = re.search(r"^stopping_early: wallclock_cap train_time:(\d+)ms step:(\d+)/200$", log, flags=re.M)
    assert stop, log[-2000:]
    final_ms, last = float(stop.group(1)), int(stop.group(2))
    cap_ms = 1000 * CAP_S
    steps = [times[s] - times.get(s - 1, 0.0) for s in sorted(times)]
    print(
        f"[slow-step cap] stopped at step {last}, train_time {final_ms:.0f} ms, cap {cap_ms:.0f} ms, "
        f"step durations {min(steps):.0f}-{max(steps):.0f} ms"
    )
    assert min(steps) >= 1000 * SLEEP_S - 1  # the sleep is training time (log rounds to ms)
    assert last == max(times) and 1 < last < 200
    assert times[last - 1] < cap_ms <= times[last]  # stopped on the first step at the cap
    assert final_ms <= cap_ms + max(steps)  # overshoot: under one step
    assert final_ms - times[last] < 50  # and nothing but bookkeeping after that step
