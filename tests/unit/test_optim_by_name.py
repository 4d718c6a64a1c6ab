"""The gradient clip (harness/pipeline/grad_clip.py) ships only with the runs that clip
(harness/api/by_name.py): which submissions embed it, and that the trainer imports it by the
declared name."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from harness.api.by_name import GRAD_CLIP_MODULE
from harness.pipeline import trainer
from harness.tools.bundle_report import default_extra_modules

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "name, clips",
    [("baseline", False), ("10L_int5mlp", True), ("12L_recycled", True), ("sp8192_recur_ttt", True)],
)
def test_only_submissions_that_clip_embed_the_clip(name, clips):
    # From the submissions' own settings: the baseline does not clip (upstream GRAD_CLIP_NORM 0),
    # the records clip at 0.3.
    assert (GRAD_CLIP_MODULE in default_extra_modules(ROOT / "submissions" / name)) is clips


def test_the_trainer_imports_the_declared_clip_module():
    tree = ast.parse(Path(trainer.__file__).read_text(encoding="utf-8"))
    imported = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "import_by_name"
        and isinstance(node.args[0], ast.Constant)
    }
    assert GRAD_CLIP_MODULE in imported  # spelled out there, so that no bundle ships the constant
    assert callable(importlib.import_module(GRAD_CLIP_MODULE).clip_gradients)
