"""Multi-node on torchrun's own c10d rendezvous, with two agents on this machine standing in for
two nodes (``torchrun --nnodes=2 --nproc_per_node=1 --rdzv-backend=c10d
--rdzv-endpoint=127.0.0.1:PORT``, gloo): the run reaches its end with world size 2 and the same
result as one agent with two processes; a node that dies (its agent and its worker killed
with SIGKILL) ends the job on the surviving node within 60 s, with one line naming the lost
contact (2.3 s measured on 2 shared cores).

Every agent runs in its own session and is killed with its workers at the end of each test,
whatever happened (torchrun starts each worker in a session of its own, so the workers are
found through /proc, not through the agent's process group).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from harness.api.context import DistInfo
from harness.api.errors import PgolfError
from harness.pipeline.distributed import already_reported, failure_cause, peer_lost
from tests.conftest import ROOT, write_tiny_submission

RUN_PY = ROOT / "harness" / "run.py"
EXIT_BOUND_S = 60.0
"""Seconds allowed from a node's death to the surviving agent's exit."""
RUN_TIMEOUT_S = 300.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(iterations: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "RUN_ID")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", ITERATIONS=str(iterations))
    return env


def _launcher(*flags: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *flags, "--max-restarts=0"]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first read from /proc; gone processes skipped)."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            children = [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            out += [child, *_descendants(child)]
    return out


def _kill_tree(proc: subprocess.Popen) -> None:
    for pid in [*_descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def _two_nodes(sub: Path, run_id: str, iterations: int, out_dir: Path):
    """Two torchrun agents (nodes) meeting at a c10d rendezvous on a free local port; yields
    their Popen objects (outputs in ``out_dir/node<i>.txt``) and kills what is left at exit."""
    port = _free_port()
    cmd = _launcher(
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        f"--rdzv-id=pgolf-test-{port}",
    ) + [str(RUN_PY), str(sub), "--run-id", run_id]
    agents: list[subprocess.Popen] = []
    try:
        for node in range(2):
            with open(out_dir / f"node{node}.txt", "wb") as out:
                agents.append(
                    subprocess.Popen(
                        cmd,
                        cwd=ROOT,
                        env=_env(iterations),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            if node == 0:  # node 0 binds the endpoint first, so it hosts the rendezvous store
                _wait_for_port(port, agents[0])
        yield agents
    finally:
        for agent in agents:
            if agent.poll() is None:
                _kill_tree(agent)
            agent.wait(timeout=30)


def _wait_for_port(port: int, agent: subprocess.Popen, timeout: float = RUN_TIMEOUT_S) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and agent.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"node 0's agent never listened on 127.0.0.1:{port} (exit status {agent.poll()})")


def _wait(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"agent {proc.pid} still running after {timeout:.0f} s")


def _train_losses(run_dir: Path) -> list[str]:
    return re.findall(r"^step:\d+/\d+ train_loss:(\S+)", (run_dir / "train.log").read_text(), flags=re.M)


@pytest.mark.dist
def test_two_agents_match_one_agent_with_two_processes(tmp_path, default_dataset):
    one = write_tiny_submission(tmp_path / "one" / "tiny")
    cmd = _launcher("--standalone", "--nproc_per_node=2") + [str(RUN_PY), str(one), "--run-id", "r"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(4), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]

    two = write_tiny_submission(tmp_path / "two" / "tiny")
    with _two_nodes(two, "r", 4, tmp_path) as agents:
        codes = [_wait(agent, RUN_TIMEOUT_S) for agent in agents]
    outputs = [(tmp_path / f"node{i}.txt").read_text(errors="replace") for i in range(2)]
    assert codes == [0, 0], "\n".join(o[-2000:] for o in outputs)

    single = json.loads((one / "runs" / "r" / "submission.json").read_text())
    multi = json.loads((two / "runs" / "r" / "submission.json").read_text())
    assert single["world_size"] == multi["world_size"] == 2
    assert "world_size:2 backend:gloo" in (two / "runs" / "r" / "train.log").read_text()
    for key in (
        "val_bpb",
        "val_loss",
        "roundtrip_val_bpb",
        "pre_quant_val_bpb",
        "bytes_model",
        "artifact_sha256",
    ):
        assert multi[key] == single[key], key
    losses = _train_losses(two / "runs" / "r")
    assert len(losses) == 4 and losses == _train_losses(one / "runs" / "r")


@pytest.mark.dist
def test_a_dead_node_ends_the_job(tmp_path, default_dataset):
    """Node 0 dies: the node that also hosts the rendezvous store, the harder case for the
    survivor's agent (killing node 1 instead ended the job 2.6 s after its death, measured)."""
    dies = 0
    sub = write_tiny_submission(tmp_path / "tiny")
    log = sub / "runs" / "d" / "train.log"
    with _two_nodes(sub, "d", 500, tmp_path) as agents:
        deadline = time.time() + RUN_TIMEOUT_S
        while not (log.is_file() and "step:2/" in log.read_text()):  # both nodes are training
            assert all(a.poll() is None for a in agents), "an agent ended before training started"
            assert time.time() < deadline, "training never reached step 2"
            time.sleep(0.05)
        victim, survivor = agents[dies], agents[1 - dies]
        _kill_tree(victim)  # the whole node: its agent and its worker, no goodbye
        killed = time.time()
        code = _wait(survivor, EXIT_BOUND_S + 30)
        elapsed = time.time() - killed
    out = (tmp_path / f"node{1 - dies}.txt").read_text(errors="replace")
    print(f"[multinode {dies=}] survivor exit {code}, {elapsed:.1f} s after the node died")
    assert code != 0 and elapsed < EXIT_BOUND_S, out[-3000:]
    lines = [ln for ln in out.splitlines() if ln.startswith("error:")]  # ours: no traceback, no repeat
    assert len(lines) == 1, out[-3000:]
    assert re.fullmatch(
        r"error: rank [01]/2 failed: lost contact with another rank \(its process or node died\): .+",
        lines[0],
    )
    assert not (sub / "runs" / "d" / "submission.json").exists()


def test_failure_cause_names_a_lost_or_silent_peer():
    # Messages as gloo printed them in this test's runs and for a collective timeout.
    reset = RuntimeError(
        "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
        "[127.0.0.1]:8874: Connection reset by peer. This is typically caused by a remote worker hanging"
    )
    assert failure_cause(reset) == (
        "lost contact with another rank (its process or node died): RuntimeError: Read error "
        "[127.0.0.1]:8874: Connection reset by peer. This is typically caused by a remote worker hanging"
    )
    silent = RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 10000ms for recv")
    assert failure_cause(silent).startswith("no answer from another rank within PGOLF_DIST_TIMEOUT_S")
    # Not a transport error: unchanged, even when the text mentions a timeout.
    assert failure_cause(ValueError("timed out")) == "ValueError: timed out"
    assert failure_cause(RuntimeError("injected failure")) == "RuntimeError: injected failure"


def test_peer_lost_replaces_a_transport_error_about_a_peer():
    two = DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"), backend="gloo")
    one = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)
    reset = RuntimeError("[pair.cc:537] Read error [127.0.0.1]:8874: Connection reset by peer")
    lost = peer_lost(two, reset)
    assert isinstance(lost, PgolfError) and already_reported(lost)  # the entry point adds no line
    assert str(lost) == failure_cause(reset)
    assert peer_lost(one, reset) is None  # no peers in a single process
    assert peer_lost(two, RuntimeError("injected failure")) is None  # a rank's own bug keeps its traceback
