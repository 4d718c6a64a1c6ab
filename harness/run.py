"""Entry point: ``torchrun --standalone --nproc_per_node=N harness/run.py submissions/<name>``.

Also runs as ``python harness/run.py submissions/<name>`` (one process). Loads the
submission's ``build_config()`` and hands it to `harness.pipeline.runner.run`. Extra arguments:
``--set KEY=VALUE`` (repeatable, type-checked), ``--run-id ID`` and ``--resume RUN_DIR``
(continue an interrupted run from its ``checkpoint.pgck``, in the same folder). A failure ends
with one ``error:`` line (`harness.pipeline.failure`): status 2, or 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _fix_sys_path() -> None:
    # Run as a script, Python puts harness/ first on sys.path; the project root must come
    # first instead so `import harness`/`import plugins` resolve to the packages.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parent))


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the submission, return the exit status."""
    from harness.pipeline.distributed import already_reported
    from harness.pipeline.failure import report_failure
    from harness.pipeline.flags import add_run_flags, run_flags
    from harness.pipeline.runner import run
    from harness.pipeline.submission import build_submission_config

    parser = argparse.ArgumentParser(prog="harness/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("submission", type=Path, help="submission folder holding train_gpt.py")
    args = add_run_flags(parser).parse_args(argv)
    flags = run_flags(args)
    try:
        config = build_submission_config(args.submission)
        folder = args.submission.resolve() if args.submission.is_dir() else args.submission.resolve().parent
        run(config, submission_dir=folder, sets=flags.sets, run_id=flags.run_id, resume=flags.resume)
    except (Exception, KeyboardInterrupt) as exc:  # one `error:` line (a rank may have printed it)
        return report_failure(exc, already_reported(exc))
    return 0


if __name__ == "__main__":
    _fix_sys_path()
    sys.exit(main())
