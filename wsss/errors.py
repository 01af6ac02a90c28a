"""Errors that mean "the user gave us something wrong", reported as one line without a traceback."""

from __future__ import annotations

from pathlib import Path


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


def read_text(path: Path, error: type[WsssError]) -> str:
    """A user's text file (config, split list, class names), or `error` naming it: a folder, an
    unreadable file or one that is not UTF-8 text is the user's mistake, not a traceback."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror or exc})") from None


def user_message(exc: BaseException) -> str:
    """One line for the terminal.

    Errors raised inside DataLoader worker processes come back re-wrapped by torch with the worker's
    traceback in the message; the original one-line message is the last line of that text.
    """
    problems = getattr(exc, "problems", None)  # several problems found at once (search spaces)
    if isinstance(problems, list) and problems:
        return "; ".join(str(p).strip() for p in problems)
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        _, _, text = last.partition(": ")
    return text.splitlines()[0] if text else type(exc).__name__
