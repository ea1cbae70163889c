"""`COMMAND [NAME...]` parsed without argparse: what `carte ps` and `carte inspect ID` are.

argparse costs about 10 ms of a client start (re, enum, functools and collections come with
it), a third of a plain `inspect`. A command's `arguments(parser)` function is run against a
`Recorder` that notes each argument's destination and default the way argparse would set
them; when every word after the command is a positional (no flag at all), the namespace is
built from those. Anything the recorder does not know (a flag given, an action, type or
choices on a positional, argument groups, several optional positionals) answers None and
the caller builds the full parser, which has the errors and the help.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_SUPPRESS = "==SUPPRESS=="  # argparse.SUPPRESS: no attribute at all
_OPTION_KEYS = {"action", "default", "nargs", "metavar", "help", "dest", "type", "choices"}
_POSITIONAL_KEYS = {"nargs", "metavar", "help", "default"}
_FLAG_DEFAULTS = {"store_true": False, "store_false": True, "store": None, "append": None}


class NotPlain(Exception):
    """The command's arguments use what only argparse does right."""


class Recorder:
    """Stands in for an argparse parser while a command adds its arguments."""

    def __init__(self) -> None:
        self.defaults: dict[str, Any] = {}
        self.positionals: list[tuple[str, str | None, Any]] = []
        self.parser_defaults: dict[str, Any] = {}

    def add_argument(self, *names: str, **options: Any) -> None:
        if not names:
            raise NotPlain
        if not names[0].startswith("-"):
            if set(options) - _POSITIONAL_KEYS:
                raise NotPlain
            self.positionals.append((names[0], options.get("nargs"), options.get("default")))
            return
        action = options.get("action", "store")
        if set(options) - _OPTION_KEYS or action not in _FLAG_DEFAULTS:
            raise NotPlain
        default = options.get("default", _FLAG_DEFAULTS[action])
        if isinstance(default, str) and "type" in options:
            raise NotPlain  # argparse would convert a string default
        long = [name for name in names if name.startswith("--")]
        dest = options.get("dest") or (long or names)[0].lstrip("-").replace("-", "_")
        if default != _SUPPRESS:
            self.defaults.setdefault(dest, default)  # argparse: the first with a dest sets it

    def set_defaults(self, **values: Any) -> None:
        self.parser_defaults.update(values)

    def parse(self, words: list[str]) -> dict[str, Any] | None:
        """The namespace's values for the positional `words`; None when they do not fit
        (argparse then says what is wrong)."""
        if any(word.startswith("-") for word in words):
            return None
        *fixed, last = self.positionals or [("", None, None)]
        if any(nargs is not None for _, nargs, _ in fixed) or last[1] not in (None, "?", "+", "*"):
            raise NotPlain
        if set(self.parser_defaults) & {dest for dest, _, _ in self.positionals}:
            raise NotPlain
        values = dict(self.defaults)
        for (dest, _, _), word in zip(fixed, words, strict=False):
            values[dest] = word
        rest = words[len(fixed) :]
        dest, nargs, default = last
        if not dest:
            if rest:
                return None
        elif nargs is None and len(rest) == 1:
            values[dest] = rest[0]
        elif nargs == "?" and len(rest) <= 1:
            values[dest] = rest[0] if rest else default
        elif nargs == "+" and rest:
            values[dest] = rest
        elif nargs == "*":
            values[dest] = rest if rest or default is None else default
        else:
            return None
        if len(words) < len(fixed):
            return None
        return {**values, **self.parser_defaults}


def plain_values(arguments: Callable[[Any], None], words: list[str]) -> dict[str, Any] | None:
    """The values argparse would give `arguments`' parser for `words`, or None when only
    argparse can tell (or say what is wrong)."""
    recorder = Recorder()
    try:
        arguments(recorder)
        return recorder.parse(words)
    except (NotPlain, AttributeError):  # AttributeError: a parser method not recorded
        return None
