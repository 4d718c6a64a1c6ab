"""Tests for harness.leaderboard.render: byte-identical regeneration (PNGs included), escaping of
hostile strings, table/section layout and ordering, half-up rounding (docs/protocol.md §10.1's
1.09785 -> 1.0979), the significance column against scipy, the empty "no runs yet" output,
and that the GitHub workflow parses as YAML."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from harness.leaderboard.entry import Entry, SeedResult
from harness.leaderboard.render import FILES, escape_md, render, round_half_up

REPO = Path(__file__).resolve().parents[2]
TPB = 0.41052
SHA_A = "ab" * 32
SHA_B = "cd" * 32


def _entry(key: str, bpbs: list[float], **kw: object) -> Entry:
    seeds = [SeedResult(seed=str(1337 + i), val_bpb=x, bytes_total=15_000_000) for i, x in enumerate(bpbs)]
    fields: dict[str, object] = {
        "name": key,
        "author": "someone",
        "date": "2026-03-20",
        "protocol": "full",
        "dataset_sha256": SHA_A,
        "score_bpb": sum(bpbs) / len(bpbs),
        "seeds": seeds,
        "bytes_total": 15_000_000,
        "steps": 1000,
        "ms_per_step": 55.555,
        "tokens_per_byte": TPB,
        "summary": f"summary of {key}",
    }
    fields.update(kw)
    return Entry(key=key, **fields)  # type: ignore[arg-type]


def _entries() -> list[Entry]:
    return [
        _entry("slow", [1.2300, 1.2310, 1.2290]),
        _entry("fast", [1.2200, 1.2205, 1.2195], flags=["over_budget"]),
        _entry("single", [1.2250]),
        _entry("other_data", [1.0], dataset_sha256=SHA_B),
        _entry("smoke_run", [3.4], protocol="smoke", dataset_sha256=None),
        _entry("rec", [1.09785], protocol="upstream", track="10min_16mb", dataset_sha256=None),
        _entry("nonrec", [1.5], protocol="upstream", track="non_record_16mb", dataset_sha256=None),
    ]


def _table_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("|")]


def _unescaped_pipes(line: str) -> int:
    count, i = 0, 0
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        count += line[i] == "|"
        i += 1
    return count


def test_render_is_byte_identical(tmp_path: Path) -> None:
    first = render(_entries(), tmp_path / "a", title="t")
    second = render(list(reversed(_entries())), tmp_path / "b", title="t")
    assert [p.name for p in first] == list(FILES)
    for p, q in zip(first, second, strict=True):
        assert p.stat().st_size > 0
        assert p.read_bytes() == q.read_bytes(), p.name
    for png in first[3:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"Software" not in png.read_bytes() and b"matplotlib" not in png.read_bytes()


def test_tables_sections_and_order(tmp_path: Path) -> None:
    readme = render(_entries(), tmp_path, title="t")[0].read_text()
    heads = [ln for ln in readme.splitlines() if ln.startswith("#")]
    assert heads == [
        "# t",
        "## Our runs — full protocol",
        "### Dataset / tokenizer fingerprints abababababab / unrecorded",
        "### Dataset / tokenizer fingerprints cdcdcdcdcdcd / unrecorded",
        "## Our runs — smoke protocol (not comparable to the challenge)",
        "### Dataset / tokenizer fingerprints unrecorded",
        "## Upstream records — 10 min / 16 MB track",
        "### Dataset / tokenizer fingerprints unrecorded",
        "## Upstream records — non-record / unlimited compute",
        "### Dataset / tokenizer fingerprints unrecorded",
        "## Plots",
    ]
    names = [
        ln.split("|")[1].strip()
        for ln in _table_lines(readme)
        if not ln.startswith("| Run") and "---" not in ln
    ]
    # other_data (1.0) is better than all but sits in its own fingerprint section after them.
    assert names == ["fast", "single", "slow", "other\\_data", "smoke\\_run", "rec", "nonrec"]
    assert "| 1.0979 |" in readme  # half-up on the decimal value
    assert "| 15,000,000 | 1,000 | 55.56 |" in readme
    assert "over\\_budget" in readme


def test_csv_and_json_full_precision(tmp_path: Path) -> None:
    paths = render(_entries(), tmp_path, title="t")
    frame = pd.read_csv(paths[1])
    data = json.loads(paths[2].read_text())
    assert len(frame) == len(data["entries"]) == 7
    rec = next(e for e in data["entries"] if e["key"] == "rec")
    assert rec["score_bpb"] == 1.09785 and rec["table"] == "upstream:10min_16mb"
    assert float(frame.loc[frame["key"] == "rec", "score_bpb"].iloc[0]) == 1.09785
    fast = next(e for e in data["entries"] if e["key"] == "fast")
    assert (
        fast["rank"] == 1
        and fast["n_seeds"] == 3
        and [s["val_bpb"] for s in fast["seeds"]] == [1.22, 1.2205, 1.2195]
    )
    assert fast["score_std"] == pytest.approx(stats.tstd([1.22, 1.2205, 1.2195]))


def test_significance_column_matches_scipy(tmp_path: Path) -> None:
    paths = render(_entries(), tmp_path, title="t")
    data = {e["key"]: e for e in json.loads(paths[2].read_text())["entries"]}
    to_nats = math.log(2) / TPB
    # "single" sits between fast and slow: it has 1 seed, so neither neighbour pair is testable.
    assert data["fast"]["vs_prev_note"] == "top of section"
    assert data["single"]["vs_prev_note"] == "this row has 1 seed"
    assert data["slow"]["vs_prev_note"] == "row above has 1 seed"
    entries = [e for e in _entries() if e.key != "single"]
    rows = {
        e["key"]: e for e in json.loads(render(entries, tmp_path / "b", title="t")[2].read_text())["entries"]
    }
    ref = stats.ttest_ind(
        [x * to_nats for x in (1.2200, 1.2205, 1.2195)],
        [x * to_nats - 0.005 for x in (1.2300, 1.2310, 1.2290)],
        equal_var=False,
        alternative="less",
    )
    assert rows["slow"]["vs_prev_p"] == pytest.approx(ref.pvalue, rel=1e-9)
    readme = (tmp_path / "b" / "README.md").read_text()
    slow_line = next(ln for ln in readme.splitlines() if ln.startswith("| slow "))
    expected = "<0.0001" if ref.pvalue < 1e-4 else round_half_up(ref.pvalue, 4)
    assert expected.replace("<", "&lt;") in slow_line


def test_unknown_ratio_is_explained(tmp_path: Path) -> None:
    entries = [
        _entry("x", [1.20, 1.21], tokens_per_byte=None),
        _entry("y", [1.30, 1.31], tokens_per_byte=None),
    ]
    readme = render(entries, tmp_path, title="t")[0].read_text()
    assert "n/a (tokens/byte unknown)" in readme


def test_hostile_strings_render_inert(tmp_path: Path) -> None:
    evil = _entry(
        "<script>alert(1)</script>",
        [1.3],
        author="a|b\\|c",
        summary="x" * 500 + "<img src=x onerror=alert(1)>",
        date="2026-03-20\n| injected | row |",
        flags=["`code` *bold* [link](http://e.x) _u_ &amp;"],
    )
    readme = render([evil, _entry("ok", [1.2])], tmp_path, title="<b>t</b>")[0].read_text()
    assert "<script>" not in readme and "<img" not in readme and "<b>" not in readme
    assert "&lt;script&gt;" in readme
    lines = _table_lines(readme)
    assert len({_unescaped_pipes(ln) for ln in lines}) == 1  # no cell breaks out of its column
    assert not any(ln.startswith("| injected") for ln in readme.splitlines())
    tables, plots_section = readme.split("\n## Plots\n")
    assert "](" not in tables.replace("\\](", "")
    # The plots section is fixed text: its only links are the generated images.
    assert plots_section == render([], tmp_path / "empty", title="t")[0].read_text().split("\n## Plots\n")[1]
    evil_line = next(ln for ln in lines if "script" in ln)
    assert "x" * 250 not in evil_line and "…" in evil_line


def test_escape_md_each_character() -> None:
    assert escape_md("a|b") == "a\\|b"
    assert escape_md("a\\b") == "a\\\\b"
    assert escape_md("<&>") == "&lt;&amp;&gt;"
    assert escape_md("`*_[]") == "\\`\\*\\_\\[\\]"
    assert escape_md("a\nb\r\nc") == "a b  c"
    assert escape_md("abcdef", limit=4) == "abc…"


def test_round_half_up() -> None:
    assert round_half_up(1.09785, 4) == "1.0979"  # binary round() gives 1.0978
    assert round(1.09785, 4) == 1.0978
    assert round_half_up(1.206, 4) == "1.2060"
    assert round_half_up(None, 4) == "—"
    assert round_half_up(float("nan"), 4) == "—"


def test_empty_leaderboard(tmp_path: Path) -> None:
    paths = render([], tmp_path, title="t")
    readme = paths[0].read_text()
    assert readme.count("_No runs yet._") == 2
    assert "## Our runs — full protocol" in readme and "## Our runs — smoke protocol" in readme
    assert "Upstream records" not in readme  # upstream tables only when records are given
    assert pd.read_csv(paths[1]).empty and "score_bpb" in paths[1].read_text()
    assert json.loads(paths[2].read_text())["entries"] == []
    assert [p.read_bytes()[:4] for p in paths[3:]] == [b"\x89PNG"] * 3


def test_workflow_parses() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed")
    flow = yaml.safe_load((REPO / ".github/workflows/leaderboard.yml").read_text())
    # PyYAML reads the bare key "on" as the boolean True.
    trigger = flow.get("on", flow.get(True))
    assert trigger["push"]["branches"] == ["main"]
    steps = flow["jobs"]["leaderboard"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "pgolf leaderboard" in runs and "torch==2.13.0" in runs and "git push" in runs
    assert any(s.get("uses", "").startswith("actions/checkout") for s in steps)
