"""Tests for harness.tools.bundle_report: per-module and per-definition shipped-byte costs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from harness.pipeline.prepared_data import DEFAULT_DATASET_MODULE
from harness.tools import bundle_report as report_module
from harness.tools import bundle_wrapper
from harness.tools.bundle import bundle_submission, collect_modules
from harness.tools.bundle_report import (
    MAIN_ROW,
    BundleReport,
    bundle_report,
    default_extra_modules,
    definition_costs,
    format_report,
)
from harness.tools.cli import main

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "submissions" / "baseline"


@pytest.fixture(scope="module")
def baseline_report() -> BundleReport:
    return bundle_report(BASELINE)


def test_every_embedded_module_is_listed_once(baseline_report: BundleReport) -> None:
    names = [m.name for m in baseline_report.modules]
    expected = collect_modules(BASELINE / "train_gpt.py", REPO)
    assert DEFAULT_DATASET_MODULE not in expected  # data preparation never ships
    assert sorted(names) == sorted([*expected, MAIN_ROW])
    assert len(names) == len(set(names))
    text = format_report(baseline_report)
    for name in names:  # each row printed once, as the first cell of its line
        assert sum(line.split(" | ")[0].strip() == name for line in text.splitlines()) == 1


def test_rows_are_sorted_largest_first(baseline_report: BundleReport) -> None:
    costs = [m.shipped for m in baseline_report.modules]
    assert costs == sorted(costs, reverse=True)
    assert costs[0] > 1000  # a real module, not a tie of empty packages
    for m in baseline_report.modules:
        defs = [d.shipped for d in m.definitions]
        assert defs == sorted(defs, reverse=True)


def test_total_is_the_real_bundle_size(baseline_report: BundleReport, tmp_path: Path) -> None:
    info = bundle_submission(BASELINE, tmp_path / "train_gpt.py", compress=True)
    assert baseline_report.shipped_bytes == info.bytes == (tmp_path / "train_gpt.py").stat().st_size
    readable = bundle_submission(BASELINE, tmp_path / "readable.py")
    assert baseline_report.readable_bytes == readable.bytes
    # marginal costs leave a positive rest (bootstrap, header, shared context), never a negative one
    assert 0 < baseline_report.unattributed < baseline_report.shipped_bytes // 2


def _toy_module(rng: random.Random, functions: int) -> str:
    """Source with ``functions`` functions of random names and constants (so it does not
    compress to nothing) and a class, with docstrings the minifier drops."""
    out = ['"""A toy module."""\n', "from __future__ import annotations\n\n"]
    for i in range(functions):
        name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(10))
        consts = ", ".join(str(rng.randrange(10**9)) for _ in range(6))
        out.append(
            f"def f{i}_{name}(value: int, scale: float = {rng.random():.6f}) -> float:\n"
            f'    """Docstring of {name}."""\n'
            f"    table = [{consts}]\n"
            f"    return sum(t * scale for t in table) + value * {rng.randrange(1000)}\n\n"
        )
    out.append("class Holder:\n    size: int = 3\n\n    def get(self) -> int:\n        return self.size\n")
    # Referenced, so the shipped form's dead-code pass (harness.tools.dead_code) keeps them all.
    names = [line.split("(")[0][4:] for line in out if line.startswith("def ")]
    out.append(f"\n\nFUNCTIONS = ({', '.join(names)},)\n")
    return "".join(out)


def _toy_tree(root: Path) -> Path:
    rng = random.Random(1234)
    files = {
        "harness/__init__.py": '__version__ = "0.0.1-toy"\n',
        "harness/big.py": _toy_module(rng, 60),
        "harness/small.py": _toy_module(rng, 8),
        "submissions/toy/train_gpt.py": (
            "from harness import big, small\n\nprint(big.Holder().get(), big.FUNCTIONS, small.FUNCTIONS)\n"
        ),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "submissions" / "toy"


def test_removing_the_largest_module_saves_its_reported_cost(tmp_path: Path) -> None:
    """Emptying the largest module on disk and bundling again lowers the shipped size by its
    reported cost, within 25 bytes, in the codec the report measured with (the smaller bundle may
    choose another): the marker's ``sources sha256`` (64 hex digits, ~32 bytes of entropy)
    changes with the source, so the codec codes it a few bytes differently."""
    root = tmp_path / "toy"
    sub = _toy_tree(root)
    report = bundle_report(sub, root=root, extra_modules=())
    largest = report.modules[0]
    assert largest.name == "harness.big"
    assert largest.shipped > 1000
    before = bundle_submission(sub, tmp_path / "before.py", root=root, compress=True)
    assert before.bytes == report.shipped_bytes
    (root / "harness" / "big.py").write_text("")
    after = bundle_submission(sub, tmp_path / "after.py", root=root, compress=True)
    inner = bundle_wrapper.unwrap(after.path.read_bytes(), 1 << 24).inner.encode()
    same_codec = len(
        bundle_wrapper.shell(report.codec, "latin1", bundle_wrapper.compress(report.codec, inner))
    )
    assert after.bytes <= same_codec  # the shell keeps the smallest codec
    assert abs((before.bytes - same_codec) - largest.shipped) <= 25
    # the definitions of the toy module are found: 60 functions and the class
    assert len(largest.definitions) == 61
    assert {d.kind for d in largest.definitions} == {"def", "class"}


def test_definition_costs_include_decorators() -> None:
    source = "import functools\n@functools.lru_cache(maxsize=None)\ndef f(x):return x*2\nclass C:pass\nY=1\n"
    defs = {d.name: d for d in definition_costs(source)}
    assert set(defs) == {"f", "C"}  # the import and the assignment are not definitions
    assert defs["f"].minified == len("@functools.lru_cache(maxsize=None)\ndef f(x):return x*2")
    assert defs["C"].kind == "class"


def test_cli_report_prints_the_table(
    baseline_report: BundleReport, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = []  # the CLI wiring and printing; the measurement itself is the fixture's (one run, ~15 s)
    monkeypatch.setattr(report_module, "bundle_report", lambda path: asked.append(path) or baseline_report)
    assert main(["bundle", str(BASELINE), "--report"]) == 0
    assert asked == [BASELINE]
    out = capsys.readouterr().out
    assert "module" in out and "| minified bytes | shipped bytes (est.) |  share" in out
    assert "shipped train_gpt.py" in out and "(exact)" in out
    assert "harness.datasets.default " not in out  # data preparation never ships


def test_default_extra_modules_follow_the_submission_config() -> None:
    subs = REPO / "submissions"
    # sp8192_recur_ttt adapts at eval time, clips, inits orthogonally, adds components to the GPT and
    # calibrates (GPTQ); byte_gpt reads byte data (prepared, not shipped) through the byte-level data
    # path, which only byte-level runs embed.
    assert default_extra_modules(submission_dir=subs / "sp8192_recur_ttt") == (
        "harness.pipeline.adaptation",
        "harness.pipeline.grad_clip",
        "plugins.arch.orthogonal_init",
        "plugins.arch.upstream_clip_order",
        "harness.pipeline.calibration",
    )
    assert "harness.pipeline.byte_data" in default_extra_modules(submission_dir=subs / "byte_gpt")
    assert default_extra_modules(submission_dir=subs / "baseline") == default_extra_modules() == ()


def test_definitions_renamed_in_the_shipped_form_are_named_as_written(baseline_report: BundleReport) -> None:
    """The minifier renames private globals (`harness.tools.minify`); the report names them as the
    source does, so a reader can find each one."""
    minified = "def A(x):return x\nclass public:pass\ndef B():return A(1)\n"
    written = "def _helper(x):\n  return x\nclass public:\n  pass\ndef _caller():\n  return _helper(1)\n"
    assert sorted(d.name for d in definition_costs(minified, written)) == ["_caller", "_helper", "public"]
    assert sorted(d.name for d in definition_costs(minified)) == ["A", "B", "public"]
    evals = next(m for m in baseline_report.modules if m.name == "harness.pipeline.eval")
    assert {"_Deadline", "_Sums", "evaluate_windows"} <= {d.name for d in evals.definitions}
