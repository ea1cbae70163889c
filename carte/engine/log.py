"""Structured logging: one line per event on stderr, in logfmt (``key=value``) form.

We pick logfmt over JSON because a person reads these lines far more often than a program
does, and logfmt stays greppable and parses as easily (``time=... level=info msg="..." k=v``).

Log an event with the standard library and put its fields in ``extra``::

    log.warning("handler crashed", extra={"handler": "api", "restart_in": 0.2})

Every logger under ``carte`` writes through the handler installed by `setup_logging`.
An exception attached with ``exc_info`` becomes an ``error="Type: message"`` field; the full
traceback is added as one escaped ``traceback=`` field only at debug level, so the one-line
rule holds.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from typing import TextIO

ROOT_LOGGER = "carte"
LEVELS = ("debug", "info", "warning", "error")

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _quote(value: object) -> str:
    text = str(value)
    if text and all(ch.isalnum() or ch in "-_./:@+,%" for ch in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    """Formats a record as one logfmt line: time, level, logger, msg, then the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields: list[tuple[str, object]] = [
            ("time", f"{stamp}.{int(record.msecs):03d}Z"),
            ("level", record.levelname.lower()),
            ("logger", record.name),
            ("msg", record.getMessage()),
        ]
        fields.extend(
            (key, value)
            for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRS and not key.startswith("_")
        )
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            fields.append(("error", describe_error(error)))
            if record.levelno <= logging.DEBUG or logging.getLogger(ROOT_LOGGER).isEnabledFor(
                logging.DEBUG
            ):
                fields.append(("traceback", "".join(traceback.format_exception(error))))
        return " ".join(f"{key}={_quote(value)}" for key, value in fields)


def describe_error(error: BaseException) -> str:
    """``Type: message`` for one exception; the leaves joined by ``; `` for an exception group."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(describe_error(leaf) for leaf in error.exceptions)
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def traceback_text(error: BaseException) -> str:
    """The full traceback of ``error``, for an explicit ``traceback=`` field (escaped onto the
    one line): unexpected failures of handlers carry it at every log level."""
    return "".join(traceback.format_exception(error))


def setup_logging(level: str = "info", stream: TextIO | None = None) -> logging.Logger:
    """Send every ``carte.*`` logger to ``stream`` (stderr by default) as logfmt at ``level``.

    Calling it again replaces the previous handler (tests and SIGHUP reloads do that).
    Raises ValueError naming the allowed levels for an unknown level.
    """
    root = logging.getLogger(ROOT_LOGGER)
    for old in list(root.handlers):
        if getattr(old, "_carte", False):
            root.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    handler._carte = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.propagate = False
    set_log_level(level)
    return root


def set_log_level(level: str) -> None:
    """Change the level of every ``carte.*`` logger; reloadable on SIGHUP.

    Raises ValueError naming the allowed levels for an unknown level.
    """
    if level not in LEVELS:
        raise ValueError(f'log level "{level}" is unknown; use one of {", ".join(LEVELS)}')
    logging.getLogger(ROOT_LOGGER).setLevel(level.upper())
