"""The client's command framework: how a command module registers its subcommands.

A command module (``carte/cli/commands/<area>.py``) exposes ``register(commands: Commands)``
and is listed in `carte.cli.parser.COMMAND_MODULES`. Each command is a function taking a
`Session` and returning the exit code; its arguments are added by an optional function::

    def register(commands: Commands) -> None:
        commands.add("logs", run=show_logs, help="print a container's logs", arguments=_logs_args)

    def _logs_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("container")
        parser.add_argument("-f", "--follow", action="store_true")

    def show_logs(session: Session) -> int:
        ...

Registering only records the command: argparse parsers cost about a millisecond each, so
`carte.cli.parser` builds the invoked command's parser alone (all of them for --help and
for usage errors).
"""

from __future__ import annotations

import sys

from carte.cli.output import Output
from carte.cli.transport import ApiError, Client, client_for_host

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    import argparse  # imported by carte.cli.parser only when a parser is built
    from collections.abc import Callable, Sequence
    from typing import Any

    CommandFunction = Callable[["Session"], int]
    ArgumentsFunction = Callable[[argparse.ArgumentParser], None]


class UsageError(Exception):
    """Bad input a parser could not catch; printed as a usage error (exit 125, as Docker)."""


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
                self._client = client_for_host(self.args.host)
            except ValueError as error:
                raise UsageError(str(error)) from None
        return self._client

    def command(self, name: str, /, **body: Any) -> Any:
        """The result of the bus command `name` (POST /v1/commands/<name>); raises ApiError."""
        return self.client.post_json(f"/v1/commands/{name}", body)["result"]


def warn(reply: Any) -> None:
    """The `warnings` of a daemon's answer on stderr, one `WARNING: ...` line each (as Docker's
    client prints them)."""
    for warning in reply.get("warnings", []):
        print(f"WARNING: {warning}", file=sys.stderr)


def fail(message: str) -> int:
    """Print ``carte: message`` on stderr; exit code 1."""
    print(f"carte: {message}", file=sys.stderr)
    return 1


def each(names: Sequence[str], action: Callable[[str], object]) -> int:
    """Run `action(name)` for every name as Docker does for several arguments: a failure is
    printed and the others still run; exit code 1 if any failed."""
    code = 0
    for name in names:
        try:
            action(name)
        except ApiError as error:
            code = fail(error.message)
    return code


def templated(
    session: Session,
    template: str,
    items: Sequence[dict[str, Any]],
    fields: Callable[[dict[str, Any]], dict[str, Any]],
    headers: dict[str, str],
) -> int:
    """A list command's `--format TEMPLATE` (see Output.templated); a template it cannot
    read is one line and exit code 1."""
    from carte.cli.output import TemplateError

    try:
        session.output.templated(template, items, fields, headers)
    except TemplateError as error:
        return fail(f"template parsing error: {error}")
    return 0


def listed(
    session: Session,
    fmt: str | None,
    items: list[dict[str, Any]],
    columns: Sequence[str],
    row: Callable[[dict[str, Any]], Sequence[Any]],
    *,
    fields: Callable[[dict[str, Any]], dict[str, Any]],
    headers: dict[str, str],
    quiet_key: str | None = None,
) -> int:
    """A list command's answer in its own `--format` (`add_template_format`): a template
    through `templated` (`fields` and `headers` as there), else table or json as
    `Output.listing` prints them (`columns`, `row`, `quiet_key`)."""
    if fmt not in (None, "table", "json"):
        return templated(session, fmt, items, fields, headers)
    session.output.format = fmt or session.output.format
    session.output.listing(items, columns, row, quiet_key=quiet_key)
    return 0


def show_inspected(session: Session, documents: list[Any], template: str | None) -> int:
    """`inspect`'s answer: the documents as one JSON list, or `-f TEMPLATE` once for each
    (a template it cannot read: one line, exit code 1)."""
    if not template or template == "json":
        session.output.data(documents)
        return 0
    from carte.cli.output import TemplateError, render_template

    try:
        for document in documents:
            session.output.line(render_template(template, document))
    except TemplateError as error:
        return fail(f"template parsing error: {error}")
    return 0


def inspect_each(
    session: Session,
    command: str,
    *,
    key: str = "name",
    shape: Callable[[Any], Any] | None = None,
) -> int:
    """`inspect NAME...`: the details of every name that exists, as one JSON list or through
    `-f TEMPLATE` (`add_inspect_format`) once for each. Each name is sent as the command's
    `key`; `shape` turns an answer into what is shown (e.g. Docker's keys beside Carte's)."""
    found: list[Any] = []

    def inspect(name: str) -> None:
        details = session.command(command, **{key: name})
        found.append(shape(details) if shape else details)

    code = each(session.args.names, inspect)
    return show_inspected(session, found, getattr(session.args, "template", None)) or code


def remove_each(session: Session, command: str, *, missing_ok: bool = False, **body: Any) -> int:
    """`rm NAME...`: remove every name, printing each one removed; with `missing_ok` (Docker's
    `network rm -f`) a name that does not exist is skipped without an error."""

    def remove(name: str) -> None:
        try:
            session.command(command, name=name, **body)
        except ApiError as error:
            if missing_ok and error.status == 404:
                return
            raise
        session.output.line(name)

    return each(session.args.names, remove)


def add_template_format(parser: argparse.ArgumentParser, dest: str) -> None:
    """A list command's `--format` (read by `templated`): table, json or a Go template."""
    parser.add_argument("--format", dest=dest, help="table, json, or a {{.Field}} template")


def add_inspect_format(parser: argparse.ArgumentParser, example: str = "{{.Name}}") -> None:
    """An `inspect` command's `-f/--format` (read by `show_inspected`): json or a template."""
    parser.add_argument("-f", "--format", dest="template", help=f"a template such as {example}")


def inspect_arguments(metavar: str, example: str | None) -> ArgumentsFunction:
    """The arguments of an `inspect NAME...` that `inspect_each` answers: -f/--format (when
    given an `example` template for its help) and the names (shown as `metavar`)."""

    def arguments(parser: argparse.ArgumentParser) -> None:
        if example is not None:
            add_inspect_format(parser, example)
        parser.add_argument("names", nargs="+", metavar=metavar)

    return arguments


def add_log_window(parser: argparse.ArgumentParser) -> None:
    """The flags every `logs` command shares: --since, --until and -t/--timestamps."""
    parser.add_argument("--since", help="since a time: 10m, 2h, Unix seconds or ISO 8601")
    parser.add_argument("--until", help="until a time: 10m, 2h, Unix seconds or ISO 8601")
    parser.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")


class _Command:
    def __init__(
        self, run: CommandFunction, help: str, arguments: ArgumentsFunction | None
    ) -> None:
        self.run = run
        self.help = help
        self.arguments = arguments


class Commands:
    """A level of subcommands (`carte <cmd>` or `carte system <cmd>`), recorded by name."""

    def __init__(self, help: str = "") -> None:
        self.help = help
        self.entries: dict[str, _Command | Commands] = {}

    def add(
        self,
        name: str,
        *,
        run: CommandFunction,
        help: str,
        arguments: ArgumentsFunction | None = None,
    ) -> None:
        """Record a command; `arguments(parser)` adds its flags when its parser is built."""
        if name in self.entries:
            raise ValueError(f'client command "{name}" is registered twice; rename one')
        self.entries[name] = _Command(run, help, arguments)

    def alias(self, name: str, level: Commands, target: str | None = None) -> None:
        """Record `name` as another spelling of the command `target` (default: `name`) that
        `level` has, as Docker has both `images` and `image ls`: the same run, help and
        arguments."""
        entry = level.entries[target or name]
        if isinstance(entry, Commands):
            raise ValueError(f'client command "{target or name}" is a group; alias a command')
        self.add(name, run=entry.run, help=entry.help, arguments=entry.arguments)

    def add_inspect(
        self,
        command: str,
        *,
        help: str,
        metavar: str,
        example: str | None = None,
        key: str = "name",
        shape: Callable[[Any], Any] | None = None,
    ) -> None:
        """Record `inspect NAME...` answered by the bus command `command` for each name
        (`inspect_each`, with its `key` and `shape`); with an `example` template, -f/--format
        too (`inspect_arguments`)."""
        self.add(
            "inspect",
            run=lambda session: inspect_each(session, command, key=key, shape=shape),
            help=help,
            arguments=inspect_arguments(metavar, example),
        )

    def group(self, name: str, *, help: str) -> Commands:
        """Record a command that has subcommands of its own (`carte system check`)."""
        existing = self.entries.get(name)
        if isinstance(existing, Commands):
            return existing
        if existing is not None:
            raise ValueError(f'client command "{name}" is registered twice; rename one')
        group = Commands(help)
        self.entries[name] = group
        return group

    def build(self, parser: argparse.ArgumentParser, only: str | None = None) -> None:
        """Add subparsers to `parser`: just `only` when it names a command, else all."""
        subparsers: Any = parser.add_subparsers(title="commands", metavar="COMMAND")
        names = [only] if only in self.entries else list(self.entries)
        for name in names:
            entry = self.entries[name]
            child = subparsers.add_parser(
                name,
                help=entry.help,
                description=entry.help,
                formatter_class=parser.formatter_class,
                allow_abbrev=False,
            )
            if isinstance(entry, Commands):
                child.set_defaults(run=None, group_parser=child)
                entry.build(child)
            else:
                child.set_defaults(run=entry.run)
                if entry.arguments is not None:
                    entry.arguments(child)
