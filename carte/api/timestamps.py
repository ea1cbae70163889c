"""RFC 3339 times as the API shows them (``2026-01-02T03:04:05.123456Z``), and durations in
Docker's words, for every domain."""

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


def human_duration(seconds: float) -> str:
    """Docker's wording: "Less than a second", "3 seconds", "About a minute", "2 hours"..."""
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return f"{int(seconds)} seconds" if int(seconds) != 1 else "1 second"
    minutes = seconds / 60
    if minutes < 1.5:
        return "About a minute"
    if minutes < 60:
        return f"{round(minutes)} minutes"
    hours = minutes / 60
    if hours < 1.5:
        return "About an hour"
    if hours < 48:
        return f"{round(hours)} hours"
    days = hours / 24
    if days < 14:
        return f"{round(days)} days"
    if days < 60:
        return f"{round(days / 7)} weeks"
    if days < 730:
        return f"{round(days / 30)} months"
    return f"{round(days / 365)} years"
