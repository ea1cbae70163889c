"""The top-level argument parser: global flags and every command module's subcommands."""

import argparse

from carte import __version__
from carte.cli.commands import Commands, HelpFormatter, Session

# Each module exposes register(commands) and is listed here with the top-level command words
# it registers (carte/cli/commands_<area>.py). The client imports only the modules that own
# the invoked word (every module for --help or an unknown word); a test keeps this in sync.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "carte.cli.commands.system": ("version", "info", "events", "system"),
    "carte.cli.commands.containers": (
        "create", "run", "start", "ps", "stop", "kill", "restart", "rm", "pause", "unpause",
        "logs", "wait", "inspect", "rename", "update", "container",
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
    "carte.cli.commands.archives": (
        "save", "load", "export", "commit", "history", "image", "container", "system",
    ),
}  # fmt: skip

# Global options that take a value, so the command name is not mistaken for one.
_OPTIONS_WITH_VALUE = ("-H", "--host", "--format")


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
    all_commands(only).build(parser, only)
    return parser
