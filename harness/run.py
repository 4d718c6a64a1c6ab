"""Entry point: ``torchrun --standalone --nproc_per_node=N harness/run.py submissions/<name>``.

Also runs as ``python harness/run.py submissions/<name>`` (one process). Loads the
submission's ``build_config()`` and hands it to `harness.runner.run`. Extra arguments:
``--set KEY=VALUE`` (repeatable, type-checked), ``--run-id ID`` and ``--resume RUN_DIR``
(continue an interrupted run from its ``checkpoint.pgck``, in the same folder).
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
    from harness.config import parse_set_args
    from harness.distributed import already_reported
    from harness.errors import PgolfError
    from harness.runner import run
    from harness.submission import build_submission_config

    parser = argparse.ArgumentParser(prog="harness/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("submission", type=Path, help="submission folder holding train_gpt.py")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override a config field, e.g. train.iterations=50")
    parser.add_argument("--run-id", default=None, help="name of the run folder (default: RUN_ID or a timestamp)")
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue the interrupted run in RUN_DIR from its checkpoint.pgck")
    args = parser.parse_args(argv)
    try:
        config = build_submission_config(args.submission)
        run(config, submission_dir=args.submission.resolve() if args.submission.is_dir() else args.submission.resolve().parent, sets=parse_set_args(args.sets), run_id=args.run_id, resume=args.resume)
    except PgolfError as exc:
        if not already_reported(exc):  # a multi-rank run already printed it with the rank
            print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    _fix_sys_path()
    sys.exit(main())
