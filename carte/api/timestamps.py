"""RFC 3339 times as the API shows them (``2026-01-02T03:04:05.123456Z``), for every domain."""

import datetime


def now_rfc3339() -> str:
    """The current UTC time, to the microsecond, with a ``Z`` suffix."""
    moment = datetime.datetime.now(datetime.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> float:
    """Unix seconds of an RFC 3339 time; 0 for an empty or malformed one."""
    if not text:
        return 0.0
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
