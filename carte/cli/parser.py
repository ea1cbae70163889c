"""The top-level argument parser: global flags and every command module's subcommands."""

import argparse
import importlib

from carte import __version__
from carte.cli.commands import Commands, Session

# Each module exposes register(commands); add new areas here (carte/cli/commands_<area>.py).
COMMAND_MODULES = ("carte.cli.commands_system",)


def _not_a_client_command(session: Session) -> int:
    """`daemon` and `runtime` are dispatched by carte.__main__; listed here only for --help."""
    session.output.line("carte: run `carte daemon --help` or `carte runtime --help`")
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carte",
        description="Carte: containers on Linux namespaces and cgroups, one executable.",
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
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    commands = Commands(subparsers)
    commands.add("daemon", run=_not_a_client_command, help="run the Carte daemon (the engine)")
    commands.add(
        "runtime", run=_not_a_client_command, help="OCI runtime command line (create/start/...)"
    )
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands)
    return parser
