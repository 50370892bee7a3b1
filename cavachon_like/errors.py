"""The package's own exception for bad input, told apart from bugs, and its data warning."""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator


class InputError(ValueError):
    """A problem with what the user gave (data, configuration, options), found before any
    computation. The command line prints these plainly; anything else is a bug and keeps
    its traceback."""


class DataWarning(UserWarning):
    """Something in the data worth a look that does not stop a run (cells without counts,
    renamed features, cells lost to an inner join). Also logged, so the command line,
    which shows the log, silences this category instead of printing each message twice."""


def warn_data(message: str, logger: logging.Logger) -> None:
    """``message`` both logged by ``logger`` and as a :class:`DataWarning` (notebooks show one,
    logs keep the other), attributed to the caller of the function that calls this one."""
    logger.warning(message)
    warnings.warn(message, DataWarning, stacklevel=3)


@contextlib.contextmanager
def input_phase() -> Iterator[None]:
    """Report errors raised while reading and checking input as :class:`InputError`.

    Wraps only the code that reads and validates what the user gave, so an error
    there is about the input, whatever its type.
    """
    try:
        yield
    except InputError:
        raise
    except KeyError as error:  # str() of a KeyError adds quotes around its message
        raise InputError(str(error.args[0]) if error.args else repr(error)) from error
    except (ValueError, TypeError, OSError) as error:
        raise InputError(str(error)) from error
