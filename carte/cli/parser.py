"""The top-level argument parser: global flags and every command module's subcommands.

argparse (with gettext and locale, ~5 ms) is imported only when a parser is built: a command
that takes no arguments (`carte version`, `carte info`), invoked with at most the global
options in their plain spelling, is dispatched by `simple_arguments` without one.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

from carte import __version__
from carte.cli.commands import Commands, Session
from carte.cli.plain_arguments import plain_values

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn, TypeVar

    Loaded = TypeVar("Loaded")

# Each module exposes register(commands) and is listed here with the top-level command words
# it registers (carte/cli/commands_<area>.py). The client imports only the modules that own
# the invoked word (every module for --help or an unknown word); a test keeps this in sync.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "carte.cli.commands.system": ("version", "info", "events", "system"),
    "carte.cli.commands.containers": (
        "create", "run", "start", "ps", "stop", "kill", "restart", "rm", "pause", "unpause",
        "logs", "wait", "inspect", "port", "rename", "update", "container",
    ),
    "carte.cli.commands.images": ("import", "images", "tag", "rmi", "image"),
    "carte.cli.commands.volumes": ("volume",),
    "carte.cli.commands.build": ("build", "image", "builder"),
    "carte.cli.commands.network": ("network",),
    "carte.cli.commands.interactive": ("exec", "attach"),
    "carte.cli.commands.container_tools": ("top", "stats"),
    "carte.cli.commands.copy": ("cp",),
    "carte.cli.commands.registry": ("pull", "push", "login", "logout", "image"),
    "carte.cli.commands.stacks": ("apply", "stack", "service", "rollout"),
    "carte.cli.commands.cluster": ("cluster",),
    "carte.cli.commands.node": ("node",),
    "carte.cli.commands.compose": ("compose",),
    "carte.cli.commands.archives": (
        "save", "load", "export", "commit", "history", "image", "container", "system",
    ),
}  # fmt: skip

# Global options that take a value, so the command name is not mistaken for one.
_OPTIONS_WITH_VALUE = ("-H", "--host", "--format")
_FORMATS = ("table", "json")


def _not_a_client_command(session: Session) -> int:
    """`daemon` and `runtime` are dispatched by carte.__main__; listed here only for --help."""
    session.output.line("carte: run `carte daemon --help` or `carte runtime --help`")
    return 2


def all_commands(word: str | None = None) -> Commands:
    """The registered commands: only those of the modules owning `word` when it has owners."""
    commands = Commands()
    commands.add("daemon", run=_not_a_client_command, help="run the Carte daemon (the engine)")
    commands.add(
        "runtime", run=_not_a_client_command, help="OCI runtime command line (create/start/...)"
    )
    owners = [module for module, words in COMMAND_MODULES.items() if word in words]
    for module_name in owners or COMMAND_MODULES:
        _import_untranslated(module_name).register(commands)
    return commands


def _import_untranslated(name: str) -> Any:
    """`import name`, with argparse untranslated if that is what first imports it
    (`_untranslated`)."""

    def load() -> Any:
        __import__(name)
        return sys.modules[name]

    return _untranslated(load)


def _untranslated(load: Callable[[], Loaded]) -> Loaded:
    """`load()`, and if that is what first imports argparse, argparse without gettext: it
    looks up each of its messages through gettext, which imports locale and searches for
    message catalogs at every lookup (~1.5 ms of each client start). Python ships no catalog
    for argparse and Carte speaks English, as Docker does; the stand-in returns the message."""
    if "argparse" in sys.modules or "gettext" in sys.modules:
        return load()
    untranslated = type(sys)("gettext")
    untranslated.__dict__.update(gettext=_gettext, ngettext=_ngettext)
    sys.modules["gettext"] = untranslated
    try:
        return load()
    finally:
        del sys.modules["gettext"]  # a later `import gettext` gets Python's own


def _gettext(message: str) -> str:
    return message  # argparse also asks for None (a subparsers group without a description)


def _ngettext(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


def command_name(argv: list[str]) -> str | None:
    """The command word in `argv` (the first token that is not a global option or its value)."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in _OPTIONS_WITH_VALUE:
            skip = True
        elif not token.startswith("-"):
            return token
    return None


def simple_arguments(argv: list[str]) -> argparse.Namespace | None:
    """The parsed arguments of `[-H/--host VALUE] [--format table|json] COMMAND [NAME...]`
    without building a parser: when COMMAND takes no arguments of its own, or when every word
    after it is a positional its arguments can take (carte.cli.plain_arguments); None for
    anything else (other spellings, flags, help, unknown words: the full parser handles
    those, with its errors)."""
    values: dict[str, Any] = {"host": None, "format": "table"}
    word = None
    words: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if word is not None:
            words.append(token)
        elif token in _OPTIONS_WITH_VALUE:
            value = next(tokens, None)
            if value is None or value.startswith("-"):
                return None
            values["format" if token == "--format" else "host"] = value
        elif token.startswith("-"):
            return None
        else:
            word = token
    if word is None or values["format"] not in _FORMATS:
        return None
    entry = all_commands(word).entries.get(word)
    if entry is None or isinstance(entry, Commands):
        return None
    # a command whose only flag is a trailing --format keeps the fast path when not given it
    if entry.arguments is None or getattr(entry.arguments, "format_only", False):
        if words:
            return None
    else:
        arguments = entry.arguments  # `run`'s import argparse for its flags
        plain = _untranslated(lambda: plain_values(arguments, words))
        if plain is None:
            return None
        values.update(plain, command_prog=f"carte {word}")
    # argparse.Namespace is a plain attribute bag too; importing argparse is what this avoids.
    values.setdefault("run", entry.run)  # unless its arguments set_defaults(run=...)
    return SimpleNamespace(**values)  # type: ignore[return-value]


def _help_formatter() -> type[argparse.HelpFormatter]:
    _import_untranslated("argparse")
    import argparse

    class HelpFormatter(argparse.HelpFormatter):
        """argparse's formatter given a width, so it does not import shutil (~10 ms) to find
        one."""

        def __init__(self, prog: str) -> None:
            try:
                width = os.get_terminal_size().columns - 2
            except OSError:
                width = int(os.environ.get("COLUMNS", "80")) - 2
            super().__init__(prog, width=max(width, 40))

    return HelpFormatter


USAGE_ERROR = 125  # Docker's exit code for a bad flag or argument


def usage_error(prog: str, message: str) -> NoReturn:
    """Print a usage error as Docker does (the problem, then where help is) and exit 125."""
    print(f"{message}\nSee '{prog} --help'.", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def _unknown_arguments(prog: str, extras: list[str]) -> str:
    """Docker's words for arguments no parser took: the first unknown flag, else the
    unexpected positional."""
    for token in extras:
        if token.startswith("--"):
            return f"unknown flag: {token.split('=', 1)[0]}"
        if token.startswith("-") and len(token) > 1:
            return f"unknown shorthand flag: '{token[1]}' in {token}"
    return f'carte: "{prog}" does not take the argument "{extras[0]}"'


def _parser_class() -> type[argparse.ArgumentParser]:
    _import_untranslated("argparse")
    import argparse

    class Parser(argparse.ArgumentParser):
        """argparse with Docker's usage errors (exit 125, one line and where help is); every
        subparser is one too (argparse makes subparsers of the parent's class)."""

        def error(self, message: str) -> NoReturn:
            if message.startswith("argument COMMAND: invalid choice: "):
                word = message.split("invalid choice: ", 1)[1].split(" (choose", 1)[0]
                message = f"{word} is not a carte command"
            usage_error(self.prog, f"carte: {message}")

        def parse_known_args(  # type: ignore[override]
            self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
        ) -> tuple[argparse.Namespace, list[str]]:
            parsed, extras = super().parse_known_args(args, namespace)
            # the innermost subparser finishes first: its prog is the invoked command's
            if getattr(parsed, "command_prog", None) is None:
                parsed.command_prog = self.prog
            return parsed, extras

        def parse_args(  # type: ignore[override]
            self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
        ) -> argparse.Namespace:
            parsed, extras = self.parse_known_args(args, namespace)
            if extras:
                prog = str(parsed.command_prog)
                usage_error(prog, _unknown_arguments(prog, extras))
            return parsed

    return Parser


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: with only the invoked command's subparser when argv names one.
    Its usage errors print Docker's two lines and exit 125 (`usage_error`)."""
    # No abbreviations here nor in any subparser: `--pid host` must never become `--pids-limit`.
    parser = _parser_class()(
        prog="carte",
        description="Carte: containers on Linux namespaces and cgroups, one executable.",
        formatter_class=_help_formatter(),
        allow_abbrev=False,
    )
    parser.add_argument(
        "-H",
        "--host",
        help="daemon: unix:///path or tcp://HOST:PORT (mutual TLS, certificates in ~/.carte or "
        "$CARTE_CERT_PATH; default: $CARTE_HOST or unix:///run/carte/carte.sock)",
    )
    parser.add_argument(
        "--format",
        choices=_FORMATS,
        default="table",
        help="output format (default: table)",
    )
    parser.add_argument("-v", "--version", action="version", version=f"carte {__version__}")
    only = command_name(argv) if argv is not None else None
    all_commands(only).build(parser, only)
    return parser
