"""Structured logging: one logfmt line per event, fields from ``extra``, level switchable."""

import io
import logging
from collections.abc import Iterator

import pytest

from carte.engine import set_log_level, setup_logging


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    setup_logging("info", out)
    yield out
    root = logging.getLogger("carte")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.propagate = True
    root.setLevel(logging.NOTSET)


def test_one_line_with_fields(stream: io.StringIO) -> None:
    logging.getLogger("carte.engine.test").warning(
        "handler crashed", extra={"handler": "api", "restart_in": 0.2, "error": 'bad "x"\nline'}
    )
    (line,) = stream.getvalue().splitlines()
    assert " level=warning logger=carte.engine.test " in line
    assert 'msg="handler crashed" handler=api restart_in=0.2' in line
    assert line.endswith('error="bad \\"x\\"\\nline"')


def test_exceptions_stay_on_one_line(stream: io.StringIO) -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError as error:
        logging.getLogger("carte.x").error("failed", exc_info=error)
    (line,) = stream.getvalue().splitlines()
    assert 'error="ValueError: boom\\nsecond line"' in line
    assert "traceback=" not in line


def test_level_filters_and_can_change(stream: io.StringIO) -> None:
    log = logging.getLogger("carte.x")
    log.debug("hidden")
    set_log_level("debug")
    log.debug("shown")
    assert [line.split("msg=")[1] for line in stream.getvalue().splitlines()] == ["shown"]
    with pytest.raises(ValueError, match='log level "loud" is unknown'):
        set_log_level("loud")
