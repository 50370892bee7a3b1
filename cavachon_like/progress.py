"""Progress lines for long commands: one as each step starts, one with its duration as it ends.

Plain log lines on the ``cavachon_like`` loggers rather than a progress bar: they read the
same in a terminal, a batch job's log file and a notebook, and need no dependency (tqdm is
not one of ours). The command line shows them on stderr; a library user sees them after
``logging.basicConfig(level=logging.INFO)``.
"""
from __future__ import annotations

import logging
import time

_LOGGER = logging.getLogger("cavachon_like")


def format_seconds(seconds: float) -> str:
    """A duration for people: ``"41.2 s"`` below a minute, ``"5 min 03 s"`` above."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


class Steps:
    """Numbered steps of one command, each logged as it starts and, with its duration, as it ends.

    :meth:`start` ends the step before it, so a long function marks its steps with one
    line each instead of nesting its body in ``with`` blocks. A step that raises logs no
    end line; the error says what happened.

    Parameters
    ----------
    total
        Steps planned, shown as ``[i/total]``; None for an unnumbered step.
    logger
        Where the lines go (default: the ``cavachon_like`` logger), at INFO.

    Examples
    --------
    >>> steps = Steps(2)
    >>> steps.start("clusters")               # [1/2] clusters ...
    >>> steps.start("differential analysis")  # [1/2] clusters: 0.3 s, then [2/2] differential analysis ...
    >>> steps.finish()                         # [2/2] differential analysis: 41.2 s
    """

    def __init__(self, total: int | None = None, logger: logging.Logger | None = None) -> None:
        self.total = total
        self.logger = logger or _LOGGER
        self.done = 0
        self._title: str | None = None
        self._started = 0.0

    def _prefix(self) -> str:
        return "" if self.total is None else f"[{self.done}/{self.total}] "

    def start(self, title: str) -> None:
        """End the current step, if any, and log the start of the next one."""
        self.finish()
        self.done += 1
        self._title = title
        self._started = time.perf_counter()
        self.logger.info("%s%s ...", self._prefix(), title)

    def finish(self) -> float | None:
        """Log the current step's duration and return it (None if no step is running)."""
        if self._title is None:
            return None
        seconds = time.perf_counter() - self._started
        self.logger.info("%s%s: %s", self._prefix(), self._title, format_seconds(seconds))
        self._title = None
        return seconds
