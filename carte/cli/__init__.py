"""The Carte client: HTTP+JSON to the daemon over its unix socket.

Imports only `carte.api` and the standard library, never trio/quart/hypercorn, so that
`carte <command>` starts close to a bare interpreter.
"""

import os
import sys

from carte.cli.commands import Session, UsageError
from carte.cli.output import Output
from carte.cli.parser import build_parser, simple_arguments, usage_error
from carte.cli.transport import ApiError, DaemonUnreachable


def main() -> None:
    """Entry point of the client: run the command in sys.argv[1:]."""
    run_client(sys.argv[1:])


def run_client(argv: list[str]) -> None:
    """Parse, run one command, exit with its code.

    Exit codes: 0 done, 1 the daemon is unreachable or answered an error (one line on stderr),
    2 a command group named without its subcommand (its help is printed), 125 a bad flag or
    argument (Docker's two lines: the problem, then `See 'carte CMD --help'.`), 130
    interrupted.
    """
    args = simple_arguments(argv)
    if args is None:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
    run = getattr(args, "run", None)
    if run is None:
        (getattr(args, "group_parser", None) or build_parser(argv)).print_help(sys.stderr)
        sys.exit(2)
    session = Session(args, Output(args.format))
    try:
        code = run(session)
    except DaemonUnreachable as error:
        print(error, file=sys.stderr)
        code = 1
    except ApiError as error:
        print(f"carte: {error.message}", file=sys.stderr)
        code = 1
    except UsageError as error:
        usage_error(getattr(args, "command_prog", None) or "carte", f"carte: {error}")
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 0
    _exit_now(code)


def _exit_now(code: int) -> None:
    """Flush and leave without interpreter teardown: it costs ~15 ms and the client holds
    nothing that needs finalizing (no atexit work, no child processes, no open files)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code)
