"""SIGKILL at random moments never leaves a torn file: every file a run writes is the old
version or the new one (issue 7, "Nothing lost").

A fork server (a child Python that imported the harness once) forks a writer process that
rewrites, in a loop and with alternating contents, the files of a run through the
harness's own writers: an artifact (`harness.pipeline.artifact.write_artifact`, a new name each time,
the previous one deleted), ``submission.json`` (`harness.pipeline.submission_json.write_submission_json`), a
training checkpoint (`harness.pipeline.checkpoint.write_checkpoint`), the code bundle
(`harness.tools.bundle.bundle_submission`), ``config.json`` (`harness.api.fileio.write_atomic`) and the
append-only ``train.log`` (`harness.pipeline.runlog.RunLogger`). The test SIGKILLs the writer after
a random delay (fixed seed), then checks every file on disk: artifacts read back and match
their digest, JSON parses to one of the two versions, the checkpoint validates, the bundle
compiles and equals the reference, train.log has at most a torn LAST line, and no leftover
temp file matches a final file's name or pattern.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from harness.pipeline.artifact import read_artifact
from harness.pipeline.checkpoint import read_checkpoint
from tests.conftest import ROOT, write_tiny_submission

if sys.platform == "win32":  # fork and SIGKILL are POSIX
    pytest.skip("needs os.fork and SIGKILL", allow_module_level=True)

# 100 kills land inside writes of several kinds each time (mid_write below); 200 only doubled
# the default suite's longest test. On a slow machine the forked writer starts late and the short
# delays land before its first write, so the kills go on, up to MAX_KILLS, until 3 landed inside.
KILLS = 100
MAX_KILLS = 3 * KILLS
MID_WRITE_KINDS = ("model_", "submission.json", "checkpoint.pgck", "train_gpt.py")
LINE = "step:{i}/1000 train_loss:{loss:.4f} padding:" + "x" * 200

SERVER = textwrap.dedent(
    r"""
    import json, os, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from harness.pipeline.artifact import write_artifact
    from harness.tools.bundle import bundle_submission
    from harness.pipeline.checkpoint import write_checkpoint
    from harness.api.protocols import QTensor
    from harness.api.fileio import write_atomic
    from harness.pipeline.submission_json import REQUIRED_KEYS, write_submission_json
    from harness.pipeline.runlog import RunLogger
    from plugins.compress.zlib import ZlibConfig

    work, sub = Path(sys.argv[1]), Path(sys.argv[2])
    LINE = sys.argv[3]

    def version(v):
        g = torch.Generator().manual_seed(v)
        codes = torch.randint(-127, 128, (256, 512), generator=g, dtype=torch.int8)
        record = {k: v for k in REQUIRED_KEYS} | {"blurb": "v" * (20000 + 5000 * v)}
        state = {"model": {"w": codes.float() * 0.5}, "step": v, "nested": ({"b": [1.5, v]},)}
        return codes, record, state

    VERSIONS = [version(0), version(1)]
    compressor = ZlibConfig(level=1).build()

    def writer():
        log = RunLogger(work, echo=False)
        n = int.from_bytes(os.urandom(6), "little")  # artifact names never repeat across writers
        prev = []

        def artifact(i):
            codes = VERSIONS[i % 2][0]
            art = work / f"model_{n + i}.pgolf"
            arrays = {"q": codes, "scale": torch.ones(256)}
            q = {"w": QTensor(kind="int8_rowwise", arrays=arrays, meta={"v": i % 2})}
            write_artifact(art, q, quantizer_name="int8", quantizer_config={}, compressor=compressor,
                           compressor_name="zlib", compressor_config={"level": 1}, extras={"v": i % 2})
            for old in prev or [p for p in work.glob("model_*.pgolf") if p != art]:
                old.unlink()  # the first write also removes what killed writers left
            prev[:] = [art]

        steps = [
            artifact,
            lambda i: write_submission_json(work / "submission.json", VERSIONS[i % 2][1]),
            lambda i: write_checkpoint(work / "checkpoint.pgck", VERSIONS[i % 2][2], {"v": i % 2}),
            lambda i: bundle_submission(sub, work / "train_gpt.py"),
            lambda i: write_atomic(
                work / "config.json", json.dumps({"v": i % 2, "pad": "c" * (4000 * (i % 2))}).encode()
            ),
        ]
        first = n % len(steps)  # each writer starts with another kind, so early kills hit every kind
        steps = steps[first:] + steps[:first]
        i = 0
        while True:
            for step in steps:
                step(i)
            log.log(LINE.format(i=i, loss=i / 7))
            i += 1

    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "fork":
            pid = os.fork()
            if pid == 0:
                try:
                    writer()
                finally:
                    os._exit(1)
            print(pid, flush=True)
        elif line.strip() == "wait":
            _, status = os.waitpid(pid, 0)
            print(status, flush=True)
    """
)


def _expected(tmp_path: Path) -> dict:
    """The two versions of every file, computed here independently of the writer."""
    out = {"codes": [], "records": [], "steps": []}
    from harness.pipeline.submission_json import REQUIRED_KEYS

    for v in (0, 1):
        g = torch.Generator().manual_seed(v)
        out["codes"].append(torch.randint(-127, 128, (256, 512), generator=g, dtype=torch.int8))
        out["records"].append({k: v for k in REQUIRED_KEYS} | {"blurb": "v" * (20000 + 5000 * v)})
    return out


def _zlib(name: str, config: dict):
    from plugins.compress.zlib import ZlibConfig

    assert name == "zlib"
    return ZlibConfig(**config).build()


def _check_files(work: Path, exp: dict, reference_bundle: bytes) -> tuple[int, int]:
    """Validate every file in ``work``; returns (files checked, temp files seen)."""
    checked, temps = 0, 0
    for path in sorted(work.iterdir()):
        name = path.name
        if name.startswith("."):  # a writer's temp file: hidden, never a final name
            assert name.endswith(".tmp") and not name.endswith((".pgolf", ".json", ".py", ".pgck", ".log")), (
                name
            )
            temps += 1
            continue
        checked += 1
        if name.endswith(".pgolf"):
            tensors, manifest = read_artifact(path, compressor_for=_zlib)  # checks the sha256 digest
            v = manifest["extras"]["v"]
            assert torch.equal(tensors["w"].arrays["q"], exp["codes"][v]), name
        elif name == "submission.json":
            assert json.loads(path.read_text(encoding="utf-8")) in exp["records"]
        elif name == "checkpoint.pgck":
            state, meta = read_checkpoint(path)
            v = meta["v"]
            assert state["step"] == v and state["nested"] == ({"b": [1.5, v]},)
            assert torch.equal(state["model"]["w"], exp["codes"][v].float() * 0.5)
        elif name == "train_gpt.py":
            data = path.read_bytes()
            compile(data, str(path), "exec")  # a torn prefix would not compile
            # Whole: the reference's first line and its last 100 bytes (not equality: other
            # work in the tree may change the embedded sources while the test runs).
            head = reference_bundle.split(b"\n", 1)[0]
            assert data.startswith(head) and data.endswith(reference_bundle[-100:]) and len(data) > 10_000
        elif name == "config.json":
            data = json.loads(path.read_text(encoding="utf-8"))
            assert data == {"v": data["v"], "pad": "c" * (4000 * data["v"])}
        elif name in ("train.log", "metrics.jsonl"):
            _check_append_only(path)
        else:
            raise AssertionError(f"unexpected file {name}")
    return checked, temps


def _check_append_only(path: Path) -> None:
    """Every complete line is a whole line as written; only the last may be torn (a prefix
    of the line that was being written). Each writer restarts at line 0 after the kill."""
    *lines, tail = path.read_text(encoding="utf-8").split("\n")
    nxt = 0
    for line in lines:
        i = int(line.split("/")[0].removeprefix("step:"))
        assert line == LINE.format(i=i, loss=i / 7) and i in (0, nxt), line[:60]
        nxt = i + 1
    assert LINE.format(i=nxt, loss=nxt / 7).startswith(tail) or LINE.format(i=0, loss=0.0).startswith(tail), (
        tail[:60]
    )


def test_sigkill_at_random_points_leaves_only_whole_files(tmp_path, monkeypatch):
    work, sub = tmp_path / "run", write_tiny_submission(tmp_path / "tiny")
    work.mkdir()
    from harness.tools.bundle import bundle_submission

    bundle_submission(sub, tmp_path / "reference.py")
    reference = (tmp_path / "reference.py").read_bytes()
    exp = _expected(tmp_path)
    env = {k: v for k, v in os.environ.items()} | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(work), str(sub), LINE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    rng = random.Random(20240607)
    kills = checked = temps = 0
    try:
        assert server.stdout.readline().strip() == "ready"
        while kills < KILLS or (sum(_mid_write(work).values()) < 3 and kills < MAX_KILLS):
            server.stdin.write("fork\n")
            server.stdin.flush()
            pid = int(server.stdout.readline())
            # Mostly short delays (kills land in the first writes), some longer (later writes),
            # and a tail long enough for the slowest writer (the bundle, ~0.3-0.8 s on a loaded
            # CI machine) to finish, so every kind of file is also seen complete.
            r = rng.random()
            delay = (
                rng.uniform(0.0, 0.02)
                if r < 0.45
                else rng.uniform(0.02, 0.25)
                if r < 0.9
                else rng.uniform(0.25, 1.5)
            )
            _sleep(delay)
            os.kill(pid, signal.SIGKILL)
            server.stdin.write("wait\n")
            server.stdin.flush()
            status = int(server.stdout.readline())
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                status
            )  # it was writing, not dead
            kills += 1
            c, t = _check_files(work, exp, reference)
            checked += c
            temps = t
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    names = {p.name for p in work.iterdir() if not p.name.startswith(".")}
    assert {"submission.json", "checkpoint.pgck", "train_gpt.py", "config.json", "train.log"} <= names
    mid_write = _mid_write(work)
    print(
        f"kills:{kills} files_checked:{checked} temp_files_left:{temps} "
        f"mid_write_kills:{mid_write} failures:0"
    )
    assert KILLS <= kills <= MAX_KILLS and checked > 3 * kills
    assert sum(mid_write.values()) >= 3, mid_write  # some kills did land inside a write (typically 5-40)


def _mid_write(work: Path) -> dict[str, int]:
    """Leftover temp files per kind: each is a kill that landed mid-write of that kind of file."""
    return {kind: sum(1 for p in work.iterdir() if p.name.startswith(f".{kind}")) for kind in MID_WRITE_KINDS}


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)
