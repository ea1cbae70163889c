"""The client's command framework: how a command module registers its subcommands.

A command module (``carte/cli/commands_<area>.py``) exposes ``register(commands: Commands)``
and is listed in `carte.cli.parser.COMMAND_MODULES`. Each command is a function taking a
`Session` and returning the exit code::

    def register(commands: Commands) -> None:
        parser = commands.add("version", run=show_version, help="show client and daemon versions")
        parser.add_argument(...)

    def show_version(session: Session) -> int:
        data = session.client.get_json("/v1/version")
        ...
"""

import argparse
from collections.abc import Callable
from typing import Any

from carte.cli.output import Output
from carte.cli.transport import Client, socket_path_from_host


class UsageError(Exception):
    """Bad input a parser could not catch; printed as an argparse usage error (exit 2)."""


class Session:
    """What a running command gets: its parsed arguments, the output, and a lazy client."""

    def __init__(self, args: argparse.Namespace, output: Output) -> None:
        self.args = args
        self.output = output
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        """The daemon client; raises UsageError for a malformed --host."""
        if self._client is None:
            try:
                self._client = Client(socket_path_from_host(self.args.host))
            except ValueError as error:
                raise UsageError(str(error)) from None
        return self._client


CommandFunction = Callable[[Session], int]


class Commands:
    """A level of subcommands (`carte <cmd>` or `carte system <cmd>`)."""

    def __init__(self, subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
        self._subparsers = subparsers

    def add(
        self, name: str, *, run: CommandFunction, help: str, **kwargs: Any
    ) -> argparse.ArgumentParser:
        """Add a command; returns its parser so the caller can add arguments."""
        parser = self._subparsers.add_parser(name, help=help, description=help, **kwargs)
        parser.set_defaults(run=run)
        return parser

    def group(self, name: str, *, help: str) -> "Commands":
        """Add a command that has subcommands of its own (`carte system check`)."""
        parser = self._subparsers.add_parser(name, help=help, description=help)
        parser.set_defaults(run=None, group_parser=parser)
        return Commands(parser.add_subparsers(title="commands", metavar="COMMAND"))
