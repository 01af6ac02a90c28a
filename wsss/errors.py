"""Errors that mean "the user gave us something wrong", reported as one line without a traceback."""

from __future__ import annotations

import errno
import os
import reprlib
import stat
from pathlib import Path
from typing import Any, BinaryIO


class WsssError(Exception):
    """Base class for user-facing errors: bad config, bad data, bad store location."""


class ConfigError(WsssError):
    """A config key is unknown, has the wrong type, or an invalid value. Names the dotted path."""


class DataError(WsssError):
    """The dataset on disk is missing, malformed or inconsistent. Names the file."""


class StoreError(WsssError):
    """The stage store cannot be opened or holds a damaged artifact."""


class LeaseLost(StoreError):
    """A build's lease on its key lapsed (its renewals failed); another builder may own the key."""


class MissingExtraError(WsssError):
    """An optional dependency (such as the `crf` extra) is needed but not installed."""


class DamagedArtifact(StoreError):
    """A file of a published artifact cannot be read back: the artifact is unpublished and rebuilt."""

    def __init__(self, path: Path | str, message: str | None = None) -> None:
        if message is None:  # rebuilt from its text alone, as torch re-raises a DataLoader worker's error
            text = str(path).strip().splitlines()[-1] if str(path).strip() else ""
            path, _, message = text.split("DamagedArtifact: ", 1)[-1].partition(": ")
        super().__init__(f"{path}: {message}")
        self.path = Path(path)

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        return type(self), (self.path, str(self).removeprefix(f"{self.path}: "))


class EnvironmentFault(WsssError):
    """The machine, not the input, is at fault: a read-only or full disk, a folder that cannot be made.
    Reported like a user mistake (one line naming the path) but with exit status 1."""

    exit_status = 1


# A text file a user hands us (config, search space, split list, class names) is read whole; the
# largest real ones are VOC's train_aug list (~130 KB). Bigger files are refused unread.
MAX_TEXT_BYTES = 4 << 20


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """`path` opened for reading if it is a regular file; OSError (EINVAL) otherwise: reading a FIFO
    would wait forever, a device (a link to /dev/zero) would never end."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens without a writer
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_text(path: Path, error: type[WsssError], max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A user's text file (config, split list, class names), or `error` naming it: a folder, an
    unreadable file, one that is not UTF-8 text or one over `max_bytes` is the user's mistake, not a
    traceback. A UTF-8 byte order mark (Windows editors write one) is dropped."""
    try:
        with open_regular(path) as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(raw) > max_bytes:
        raise error(f"{path}: over {max_bytes >> 20} MiB; not a text file of settings or image ids")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 text file") from None


def os_error_message(exc: OSError, path: object = None) -> str:
    """`path: what the system said` for an OSError (the path it names, else `path`)."""
    where = exc.filename if exc.filename is not None else path
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{where}: {reason}" if where is not None else reason


MAX_MESSAGE = 1000  # characters of one error line; the rest of a longer one is cut


def bounded(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` cut to `limit` characters, saying how much was left out (a value in an error message may
    be anything a file held)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def user_message(exc: BaseException) -> str:
    """One line for the terminal, at most MAX_MESSAGE characters (plus a note of what was cut).

    Errors raised inside DataLoader worker processes come back re-wrapped by torch with the worker's
    traceback in the message; the original one-line message is the last line of that text.
    """
    problems = getattr(exc, "problems", None)  # several problems found at once (search spaces)
    if isinstance(problems, list) and problems:
        return bounded("; ".join(str(p).strip() for p in problems))
    if isinstance(exc, OSError):
        return bounded(os_error_message(exc))
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        _, _, text = last.partition(": ")
    return bounded(text.splitlines()[0]) if text else type(exc).__name__


def _short_repr_settings() -> reprlib.Repr:
    short = reprlib.Repr()  # keyword arguments only from Python 3.12
    short.maxlevel, short.maxlist, short.maxtuple, short.maxdict = 3, 8, 8, 8
    short.maxstring = short.maxother = 80
    return short


_SHORT = _short_repr_settings()


def short_repr(value: Any) -> str:
    """repr() of a value from a user's file, cut to a readable size (it may hold anything)."""
    return bounded(_SHORT.repr(value), 200)
