"""The top-level argument parser: global flags and every command module's subcommands."""

import argparse

from carte import __version__
from carte.cli.commands import Commands, HelpFormatter, Session

# Each module exposes register(commands); add new areas here (carte/cli/commands_<area>.py).
COMMAND_MODULES = (
    "carte.cli.commands_system",
    "carte.cli.commands_containers",
    "carte.cli.commands_images",
    "carte.cli.commands_volumes",
    "carte.cli.commands_build",
    "carte.cli.commands_network",
    "carte.cli.commands_interactive",
    "carte.cli.commands_container_tools",
    "carte.cli.commands_copy",
)

# Global options that take a value, so the command name is not mistaken for one.
_OPTIONS_WITH_VALUE = ("-H", "--host", "--format")


def _not_a_client_command(session: Session) -> int:
    """`daemon` and `runtime` are dispatched by carte.__main__; listed here only for --help."""
    session.output.line("carte: run `carte daemon --help` or `carte runtime --help`")
    return 2


def all_commands() -> Commands:
    commands = Commands()
    commands.add("daemon", run=_not_a_client_command, help="run the Carte daemon (the engine)")
    commands.add(
        "runtime", run=_not_a_client_command, help="OCI runtime command line (create/start/...)"
    )
    for module_name in COMMAND_MODULES:
        __import__(module_name, fromlist=["register"]).register(commands)
    return commands


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


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: with only the invoked command's subparser when argv names one."""
    parser = argparse.ArgumentParser(
        prog="carte",
        description="Carte: containers on Linux namespaces and cgroups, one executable.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "-H",
        "--host",
        help="daemon socket, unix:///path (default: $CARTE_HOST or unix:///run/carte/carte.sock)",
    )
    parser.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="output format (default: table)",
    )
    parser.add_argument("-v", "--version", action="version", version=f"carte {__version__}")
    only = command_name(argv) if argv is not None else None
    all_commands().build(parser, only)
    return parser
