"""The command line of `carte shim`, and how to run this executable again.

Kept apart from shim_create so the factory and the launcher parse without the runtime.
"""

from __future__ import annotations

import sys

DEFAULT_LINGER_SECONDS = 10.0
# The monitor's configuration travels in this environment variable (read and removed at once),
# so the shim's command line on the host stays `carte-shim -id ID`.
CONFIG_VARIABLE = "CARTE_SHIM_CONFIG"


class ShimOptions:
    """The command line of `carte shim`."""

    def __init__(self) -> None:
        self.id = ""
        self.bundle = ""
        self.state_dir = ""
        self.log_path = ""
        self.log_max_size = 0
        self.log_max_file = 1
        self.stdin = False
        self.linger = DEFAULT_LINGER_SECONDS


_USAGE = (
    "usage: carte shim --id ID --bundle DIR --state-dir DIR --log-path FILE "
    "[--log-max-size BYTES] [--log-max-file N] [--stdin] [--linger SECONDS]"
)


def parse_options(argv: list[str]) -> ShimOptions:
    """Parse the command line. Raises ValueError with one line naming the bad argument."""
    options = ShimOptions()
    values = {
        "--id": "id",
        "--bundle": "bundle",
        "--state-dir": "state_dir",
        "--log-path": "log_path",
    }
    numbers = {"--log-max-size": "log_max_size", "--log-max-file": "log_max_file"}
    position = 0
    while position < len(argv):
        flag, _, inline = argv[position].partition("=")
        position += 1
        if flag == "--stdin":
            options.stdin = True
            continue
        if flag not in values and flag not in numbers and flag != "--linger":
            raise ValueError(f"unknown argument {flag!r}; {_USAGE}")
        if not inline:
            if position >= len(argv):
                raise ValueError(f"{flag} needs a value; {_USAGE}")
            inline = argv[position]
            position += 1
        if flag in values:
            setattr(options, values[flag], inline)
        elif flag == "--linger":
            options.linger = _number(flag, inline, float)
        else:
            setattr(options, numbers[flag], int(_number(flag, inline, int)))
    for flag, name in values.items():
        if not getattr(options, name):
            raise ValueError(f"{flag} is required; {_USAGE}")
    return options


def _number(flag: str, text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{flag} {text!r} is not a number; give e.g. {flag} 10") from None
    if value < 0:
        raise ValueError(f"{flag} {text!r} is negative; give 0 or more")
    return value


def self_command() -> list[str]:
    """How to run this executable again (as the monitor or a helper): the interpreter with the
    same -I/-S flags and -c/-m bootstrap this process was started with, or the frozen binary."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    original = sys.orig_argv
    for flag in ("-c", "-m"):
        if flag in original:
            index = original.index(flag)
            return [sys.executable, *original[1 : index + 2]]
    return [sys.executable, "-m", "carte"]
