"""What a job's failure means to the person who ran it: the two kinds of error, and the exit code of each.

Every command of the project (``prefhouse <job>`` and the card's scripts) answers the same way: exit 0
when the work is done; 1 when a quality gate or the report before DPO refused it (:class:`Refused`); 2
for a usage, configuration, input or lake-state error (:class:`UsageError`, or a ``ValueError``), each
with one line on standard error, the traceback only with ``--debug``. Anything else is a bug: exit 2
too, with its type named and a hint to ``--debug``. This module sits at the bottom of the layers so
that any of them can raise these errors.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

OK, REFUSED, USAGE, INTERRUPTED = 0, 1, 2, 130


class Refused(RuntimeError):
    """The data did not pass: a quality gate refused an append, or the report refused a DPO round (exit 1)."""


class UsageError(RuntimeError):
    """The command cannot run as asked: bad arguments, settings, inputs or lake state (exit 2)."""


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call a job's ``main`` and turn what it raises into an exit code and one line (the traceback with ``--debug``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug and "--debug" not in _own_flags(main):
        argv.remove("--debug")
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted: what was committed is intact; the same command resumes", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, Refused):
            print(f"refused: {exc}", file=sys.stderr)
            return REFUSED
        if isinstance(exc, (UsageError, ValueError, FileNotFoundError)):
            print(f"error: {exc}", file=sys.stderr)
            return USAGE
        print(f"error: {type(exc).__name__}: {exc} (--debug shows the traceback)", file=sys.stderr)
        return USAGE


def _own_flags(main: Callable) -> set[str]:
    """The flags a job's own parser takes (a job with ``--debug`` of its own receives it)."""
    parser = getattr(sys.modules.get(main.__module__), "build_parser", None)
    return set(parser()._option_string_actions) if callable(parser) else set()
