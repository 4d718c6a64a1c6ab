"""Each submission's shipped bundle stays within its code budget: the table "Code budgets" in
the README (the bundle as the main job writes it: compressed, minified, default data, with
what the submission's config reaches by name: the byte converter, the TTT walk)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.tools.bundle import bundle_submission
from harness.tools.bundle_report import default_extra_modules

ROOT = Path(__file__).resolve().parents[2]
SUBMISSIONS = sorted(p.name for p in (ROOT / "submissions").iterdir() if (p / "train_gpt.py").is_file())


def _budgets() -> dict[str, int]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Code budgets", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| [\d,]+ \| ([\d,]+) \|$", section, flags=re.M)
    return {name: int(budget.replace(",", "")) for name, budget in rows}


def test_every_submission_has_a_budget():
    assert sorted(_budgets()) == SUBMISSIONS


@pytest.mark.parametrize("name", SUBMISSIONS)
def test_shipped_code_is_within_its_budget(name, tmp_path):
    info = bundle_submission(
        ROOT / "submissions" / name,
        tmp_path / "train_gpt.py",
        compress=True,
        extra_modules=default_extra_modules(submission_dir=ROOT / "submissions" / name),
    )
    budget = _budgets()[name]
    assert info.bytes <= budget, (
        f"{name}: the shipped train_gpt.py is {info.bytes} bytes, over its budget of {budget}"
    )
