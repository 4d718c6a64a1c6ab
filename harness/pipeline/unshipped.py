"""Run phases that report or refuse but never change what a run computes: imported by name,
so shipped bundles leave them out and do not pay for their bytes (pgolf issue 13).

The rule (docs/architecture.md, "What ships"): everything that changes the training losses, the
artifact's bytes or the scores ships in the counted ``train_gpt.py``. A module that only
describes the run (baselines, telemetry, the entropy report) or only refuses (the preflight, the
data/tokenizer binding before anything is computed; the code-origin and tamper checks, which are
defence in depth inside the submission's own process, where `pgolf verify`'s trusted scorer is
the check that counts) does not. A run from the
repository, which writes the claimed ``submission.json``, runs them all as before; ``pgolf
verify`` re-runs the shipped file and compares its scores, token and byte counts and dataset
and tokenizer fingerprints with that claim. A bundle run without them logs one
``<phase>: skipped (not shipped; ...)`` line each and leaves their keys out of its
``submission.json``; its losses, artifact and scores are those of the run that shipped it
(tests/e2e/test_submissions_e2e.py checks this for every submission).

The bundler follows import statements only (`harness.tools.bundle`), so importing these
modules through `importlib` is what keeps them out; tests/unit/test_unshipped.py fails when a
submission's bundle reaches one of them statically.
"""

from __future__ import annotations

import importlib
from types import ModuleType

UNSHIPPED: dict[str, str] = {
    "baselines": "harness.pipeline.baselines",
    "telemetry": "harness.pipeline.telemetry",
    "entropy": "harness.pipeline.entropy_report",
    "data_binding": "harness.pipeline.data_binding",
    "preflight": "harness.pipeline.preflight",
    "code_origin": "harness.pipeline.code_origin",
    "integrity": "harness.pipeline.integrity",
}
"""Phase name (as the ``skipped`` line says it) -> the module that implements it."""


def unshipped_module(phase: str) -> ModuleType | None:
    """The module of ``phase`` (a key of `UNSHIPPED`), or None inside a bundle that left it out.

    Only the module itself missing means "not shipped": an import error raised inside it, or a
    missing module it imports, still propagates."""
    name = UNSHIPPED[phase]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return None


def skipped_line(phase: str) -> str:
    """The log line of a phase a bundle runs without (`unshipped_module` returned None)."""
    return f"{phase}: skipped (not shipped; a run from the repository reports it)"
