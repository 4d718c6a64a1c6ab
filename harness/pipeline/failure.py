"""How a failed run ends: one ``error: ...`` line on stderr, the same line appended to the run's
``train.log``, and an exit status (2 for bad input and for the machine refusing a write, 130
for Ctrl-C, as shells report SIGINT; 1 for an unexpected failure, which also prints its
traceback because it is a bug to report).

Expected failures are the harness's own errors (`harness.api.errors.PgolfError`), the operating
system refusing a file operation (`OSError`: a full disk, a read-only or unwritable folder) and
an interruption (`KeyboardInterrupt`); none of them needs a traceback to be understood.
"""

from __future__ import annotations

import errno
import sys
import traceback

from harness.api.errors import PgolfError

INTERRUPTED_STATUS = 130

_OS_HINTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the folder is on a read-only file system",
    errno.EACCES: "no permission to write there",
    errno.EPERM: "no permission to write there",
}


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training between two steps; the message says where the checkpoint is."""


def failure_message(exc: BaseException) -> str | None:
    """The one-line message of an expected failure; None for an unexpected one (a bug)."""
    if isinstance(exc, PgolfError):
        return " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, KeyboardInterrupt):
        return str(exc) or "interrupted (Ctrl-C); the files written so far are kept"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        hint = _OS_HINTS.get(exc.errno or 0, "the operating system refused a file operation")
        return f"{hint}: {exc.strerror or exc}{where}; the files written so far are kept"
    return None


def error_line(exc: BaseException) -> str:
    """``error: <message>`` for any failure (an unexpected one is named by its type)."""
    message = failure_message(exc)
    if message is None:
        message = f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())} (traceback above)"
    return f"error: {message}"


def exit_status(exc: BaseException) -> int:
    """The process status for ``exc``: 130 for Ctrl-C, 2 for other expected failures, 1 for a bug."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED_STATUS
    return 2 if failure_message(exc) is not None else 1


def report_failure(exc: BaseException, already_printed: bool = False) -> int:
    """Print the ``error:`` line (an expected failure's only once: a failed rank may have printed
    it already), after the traceback for an unexpected one; returns the exit status."""
    unexpected = failure_message(exc) is None
    if unexpected:
        traceback.print_exception(exc)
    if unexpected or not already_printed:
        print(error_line(exc), file=sys.stderr, flush=True)
    return exit_status(exc)
