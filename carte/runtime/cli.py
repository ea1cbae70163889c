"""`carte runtime ...`: the OCI runtime command-line interface over the runtime library.

    carte runtime [--root DIR] [--log FILE] [--log-format json|text] COMMAND ...
      create [--bundle DIR] [--pid-file F] [--console-socket SOCK] [--preserve-fds N] ID
      start ID | state ID | kill [--all] ID [SIGNAL] | delete [--force] ID
      run [--bundle DIR] [--pid-file F] [--console-socket SOCK] [--detach] ID
      exec --process FILE [--pid-file F] [--console-socket SOCK] [--detach] ID
      list | spec [--bundle DIR]

Global flags other engines pass to runc-compatible runtimes (--systemd-cgroup, --debug, ...)
are accepted and ignored. Errors are one line on stderr (and a JSON line in --log when
--log-format json, which is where podman/conmon look) and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from carte.api.errors import CarteError

DEFAULT_ROOT = Path("/run/carte/runtime")


class _UnabbreviatedParser(argparse.ArgumentParser):
    """A subcommand's parser that never takes a prefix for a whole option name."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs, allow_abbrev=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carte runtime", description="OCI runtime for Carte", allow_abbrev=False
    )
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="state directory")
    parser.add_argument("--log", type=Path, default=None, help="append errors to this file")
    parser.add_argument("--log-format", choices=("json", "text"), default="text")
    for ignored in ("--systemd-cgroup", "--debug", "--rootless", "--no-new-keyring"):
        parser.add_argument(ignored, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--criu", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        parser_class=_UnabbreviatedParser,
    )

    def with_create_flags(command: argparse.ArgumentParser) -> None:
        command.add_argument("--bundle", "-b", type=Path, default=Path("."))
        command.add_argument("--pid-file", type=Path)
        command.add_argument("--console-socket", type=Path)
        command.add_argument("--preserve-fds", type=int, default=0)
        command.add_argument("--no-pivot", action="store_true", help=argparse.SUPPRESS)
        command.add_argument("--no-new-keyring", action="store_true", help=argparse.SUPPRESS)
        command.add_argument("id")

    with_create_flags(commands.add_parser("create", help="create a container (not started)"))
    run = commands.add_parser("run", help="create, start and wait; exit with its status")
    with_create_flags(run)
    run.add_argument("--detach", "-d", action="store_true")
    commands.add_parser("start", help="start a created container").add_argument("id")
    commands.add_parser("state", help="print the state JSON").add_argument("id")
    kill = commands.add_parser("kill", help="send a signal (default TERM)")
    kill.add_argument("--all", "-a", action="store_true")
    kill.add_argument("id")
    kill.add_argument("signal", nargs="?", default="TERM")
    delete = commands.add_parser("delete", help="remove a stopped container")
    delete.add_argument("--force", "-f", action="store_true")
    delete.add_argument("id")
    commands.add_parser("list", help="list containers")
    spec = commands.add_parser("spec", help="print the default config.json")
    spec.add_argument("--bundle", "-b", type=Path, default=None)
    spec.add_argument("--rootless", action="store_true", help=argparse.SUPPRESS)
    exec_ = commands.add_parser("exec", help="run a process in a running container")
    exec_.add_argument("--process", "-p", type=Path, required=True)
    exec_.add_argument("--pid-file", type=Path)
    exec_.add_argument("--console-socket", type=Path)
    exec_.add_argument("--preserve-fds", type=int, default=0)
    exec_.add_argument("--detach", "-d", action="store_true")
    exec_.add_argument("--tty", "-t", action="store_true", help=argparse.SUPPRESS)
    exec_.add_argument("--cwd", help=argparse.SUPPRESS)
    exec_.add_argument("id")
    return parser


def parse_signal(text: str) -> int:
    """A signal from "TERM", "SIGTERM", "sigterm" or "15". Raises `ValueError` naming it."""
    if text.isdigit():
        return int(text)
    name = text.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ValueError(
            f'unknown signal "{text}"; use a name such as TERM or KILL, or a number'
        ) from None


def _fail(args: argparse.Namespace, message: str) -> NoReturn:
    print(f"carte runtime: {message}", file=sys.stderr, flush=True)
    log: Path | None = getattr(args, "log", None)
    if log is not None:
        try:
            with log.open("a") as stream:
                if args.log_format == "json":
                    import json

                    entry = {"level": "error", "msg": message, "time": time.time()}
                    stream.write(json.dumps(entry) + "\n")
                else:
                    stream.write(f"error: {message}\n")
        except OSError:
            pass
    raise SystemExit(1)


def _write_pid_file(path: Path | None, pid: int) -> None:
    if path is None:
        return
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(str(pid))
    os.replace(temporary, path)


def _create(args: argparse.Namespace, console_socket: Path | None = None) -> int:
    from carte.runtime.container import spawn
    from carte.runtime.spec import load_spec, validate_spec

    spec = load_spec(args.bundle / "config.json")
    validate_spec(spec, source=str(args.bundle / "config.json"))
    spawned = spawn(
        spec,
        args.bundle,
        container_id=args.id,
        state_dir=args.root,
        console_socket=console_socket or args.console_socket,
        preserve_fds=args.preserve_fds,
    )
    _write_pid_file(args.pid_file, spawned.pid)
    return spawned.pid


def _wants_terminal(bundle: Path) -> bool:
    from carte.runtime.spec import load_spec

    process = load_spec(bundle / "config.json").process
    return process is not None and process.terminal


def _run(args: argparse.Namespace) -> int:
    """create + start + wait. A terminal container with no --console-socket gets our own
    terminal: we receive the pty master ourselves and copy bytes both ways."""
    from carte.runtime.container import delete, start, wait_exit

    if args.console_socket is None and not args.detach and _wants_terminal(args.bundle):
        return _run_on_our_terminal(args)
    pid = _create(args)
    start(args.root, args.id)
    if args.detach:
        return 0

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for forwarded in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(forwarded, forward)
    status = wait_exit(pid)
    delete(args.root, args.id, force=True)
    return status


def _run_on_our_terminal(args: argparse.Namespace) -> int:
    import tempfile

    from carte.runtime.console_proxy import ConsoleListener, proxy_until_exit
    from carte.runtime.container import delete, start
    from carte.runtime.init import exit_status

    directory = Path(tempfile.mkdtemp(prefix="carte-console-"))
    listener = ConsoleListener(directory / "console.sock")
    try:
        pid = _create(args, console_socket=listener.path)
        master = listener.receive_master()
    finally:
        listener.close()
        directory.rmdir()
    start(args.root, args.id)
    status = proxy_until_exit(master, pid)
    delete(args.root, args.id, force=True)
    return exit_status(status)


def _exec(args: argparse.Namespace) -> int:
    import msgspec

    from carte.runtime.container import exec_process, wait_exit
    from carte.runtime.spec import Process
    from carte.runtime.state import load_record

    try:
        process = msgspec.json.decode(args.process.read_bytes(), type=Process)
    except (OSError, msgspec.DecodeError) as error:
        raise ValueError(f"--process {args.process}: {error}; give a process.json") from None
    if args.cwd:
        process = msgspec.structs.replace(process, cwd=args.cwd)
    record = load_record(args.root, args.id)
    from carte.runtime.spec import load_spec

    container_spec = load_spec(Path(record.bundle) / "config.json")
    pid = exec_process(
        args.root,
        args.id,
        process,
        console_socket=args.console_socket,
        preserve_fds=args.preserve_fds,
        seccomp_profile=container_spec.linux.seccomp,
    )
    _write_pid_file(args.pid_file, pid)
    if args.detach:
        return 0
    return wait_exit(pid)


def _list(args: argparse.Namespace) -> int:
    from carte.runtime.state import list_records, oci_state

    print(f"{'ID':<24} {'PID':>8} {'STATUS':<8} {'BUNDLE':<40} CREATED")
    for record in list_records(args.root):
        shown = oci_state(args.root, record)
        print(f"{shown.id:<24} {shown.pid:>8} {shown.status:<8} {shown.bundle:<40} {shown.created}")
    return 0


def _spec(args: argparse.Namespace) -> int:
    import msgspec

    from carte.runtime.spec import default_spec, encode_spec

    document = msgspec.json.format(encode_spec(default_spec()), indent=2).decode() + "\n"
    if args.bundle is not None:
        (args.bundle / "config.json").write_text(document)
    else:
        sys.stdout.write(document)
    return 0


def dispatch(args: argparse.Namespace) -> int:
    """Run one parsed command; returns the exit status."""
    from carte.runtime import container

    command: str = args.command
    if command in ("create", "run"):
        return _create(args) * 0 if command == "create" else _run(args)
    if command == "start":
        container.start(args.root, args.id)
    elif command == "state":
        import msgspec

        shown = container.state_of(args.root, args.id)
        print(msgspec.json.format(msgspec.json.encode(shown), indent=2).decode())
    elif command == "kill":
        container.kill(args.root, args.id, parse_signal(args.signal), all_processes=args.all)
    elif command == "delete":
        container.delete(args.root, args.id, force=args.force)
    elif command == "list":
        return _list(args)
    elif command == "spec":
        return _spec(args)
    elif command == "exec":
        return _exec(args)
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point: `carte runtime ...` (argv without the program and mode)."""
    args = _parser().parse_args(sys.argv[2:] if argv is None else argv)
    try:
        status = dispatch(args)
    except CarteError as error:
        _fail(args, error.message)
    except (OSError, ValueError) as error:
        _fail(args, str(error))
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown (module GC): it costs more than the whole container start.
    os._exit(status)
