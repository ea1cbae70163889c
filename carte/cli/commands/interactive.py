"""Interactive container commands: `run -i/-t` (called by `carte run`), `exec` and `attach`.

Each is one WebSocket stream with the daemon (carte/cli/stream_session.py). Exit codes follow
Docker: the process's own code (126/127 when it cannot be invoked or is not found), 125 for a
`run` the daemon refused, 1 for an `exec`/`attach` the daemon refused, 0 after a detach.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from carte.cli.commands import Commands, Session, warn
from carte.cli.transport import ApiError, DaemonUnreachable

# Every client command imports this module to register; the stream machinery (signal,
# termios, the WebSocket client) is imported only by the commands that use it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from carte.cli.stream_session import StreamEnd
    from carte.cli.websocket import WebSocket

RUN_REFUSED = 125
COMMAND_REFUSED = 1
# How long `run --rm` waits for the daemon to remove the container after it exited.
REMOVE_WAIT_SECONDS = 10.0


def register(commands: Commands) -> None:
    commands.add(
        "exec", run=exec_command, help="run a command in a running container", arguments=_exec
    )
    commands.add(
        "attach",
        run=attach,
        help="attach to a running container's input and output",
        arguments=_attach,
    )


def _exec(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    parser.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    parser.add_argument("-d", "--detach", action="store_true", help="run in the background")
    parser.add_argument("-u", "--user", default="", help="user[:group] (name or id)")
    parser.add_argument("-w", "--workdir", default="", help="working directory in the container")
    parser.add_argument(
        "-e", "--env", action="append", default=[], help="set an environment variable KEY=VALUE"
    )
    parser.add_argument(
        "--env-file", action="append", default=[], help="read environment variables from a file"
    )
    parser.add_argument("container")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND")


def _attach(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-stdin", action="store_true", help="do not attach stdin")
    parser.add_argument(
        "--sig-proxy",
        default="true",
        choices=("true", "false"),
        help="pass Ctrl-C on to the container when it has no terminal (default true)",
    )
    parser.add_argument("container")


def _open(session: Session, path: str) -> WebSocket | None:
    """The stream at `path`; None when the daemon refused it (its message printed)."""
    from carte.cli.stream_session import print_error
    from carte.cli.websocket import WebSocket

    try:
        return WebSocket.connect(session.client, path)
    except (ApiError, DaemonUnreachable) as error:
        print_error(_message(error))
        return None


def _size_query() -> str:
    from carte.cli.terminal import window_size

    rows, cols = window_size(0)
    return f"&rows={rows}&cols={cols}" if rows and cols else ""


def _ended(end: StreamEnd, refused: int) -> int:
    """The exit code for how the stream ended; prints the daemon's error if there is one."""
    from carte.cli.stream_session import print_error

    if end.detached:
        return 0
    if end.error is not None:
        message = str(end.error.get("message", "the daemon failed"))
        for code in (126, 127):
            if f"[exit {code}]" in message:
                print_error(message.replace(f" [exit {code}]", ""))
                return code
        print_error(message)
        return refused
    return end.exit_code if end.exit_code is not None else refused


# --- run -i / run -t ------------------------------------------------------------------------


def run_interactive(session: Session) -> int:
    """`carte run -i/-t`: create, attach, start, stream until it exits; its exit code."""
    from carte.cli.run_options import (
        RunOptionError,
        claim_cidfile,
        container_config,
        fill_cidfile,
    )
    from carte.cli.stream_session import print_error

    args = session.args
    if args.tty and args.interactive and not os.isatty(0):
        print_error("the input device is not a TTY; drop -t or run from a terminal")
        return RUN_REFUSED
    try:
        config = container_config(args)
        claim_cidfile(args.cidfile)
    except RunOptionError as error:
        print_error(str(error))
        return RUN_REFUSED
    try:
        created = session.command("CreateContainer", config=config)
    except (ApiError, DaemonUnreachable) as error:
        fill_cidfile(args.cidfile, "")
        print_error(_message(error))
        return RUN_REFUSED
    fill_cidfile(args.cidfile, str(created["id"]))
    warn(created)
    container_id = str(created["id"])
    end = _attached(
        session, container_id, start=True, stdin=args.interactive, tty=args.tty, sig_proxy=True
    )
    if end is None:
        return RUN_REFUSED
    code = _ended(end, RUN_REFUSED)
    if args.rm and not end.detached:
        _wait_removed(session, container_id, force=end.error is not None)
    return code


def _signal(session: Session, container_id: str, signal_name: str) -> None:
    try:
        session.command("KillContainer", ref=container_id, signal=signal_name)
    except ApiError:
        pass  # it has exited meanwhile; the stream ends with its code


def _wait_removed(session: Session, container_id: str, *, force: bool) -> None:
    """The daemon removes a --rm container once it exited; wait for that (a start that failed
    left it created, so remove it then)."""
    if force:
        try:
            session.command("RemoveContainer", ref=container_id, force=True)
        except ApiError:
            pass
        return
    deadline = time.monotonic() + REMOVE_WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            session.command("InspectContainer", ref=container_id)
        except ApiError:
            return
        time.sleep(0.02)


# --- exec -----------------------------------------------------------------------------------


def exec_command(session: Session) -> int:
    from urllib.parse import quote

    from carte.cli.stream_session import StreamSession, print_error
    from carte.cli.terminal import window_size

    args = session.args
    if not args.cmd:
        print_error("exec needs a command; e.g. carte exec NAME sh")
        return COMMAND_REFUSED
    tty = bool(args.tty) and not args.detach
    if tty and args.interactive and not os.isatty(0):
        print_error("the input device is not a TTY; drop -t or run from a terminal")
        return COMMAND_REFUSED
    from carte.cli.run_options import RunOptionError

    try:
        env = _environment(args)
    except RunOptionError as error:
        print_error(str(error))
        return COMMAND_REFUSED
    rows, cols = window_size(0) if tty else (0, 0)
    options = {
        "cmd": list(args.cmd),
        "tty": tty,
        "stdin": bool(args.interactive) and not args.detach,
        "detach": bool(args.detach),
        "user": args.user,
        "workdir": args.workdir,
        "env": env,
        "rows": rows,
        "cols": cols,
    }
    ws = _open(session, f"/v1/containers/{quote(args.container, safe='')}/exec")
    if ws is None:
        return COMMAND_REFUSED
    try:
        ws.send_text(json.dumps(options))
        end = StreamSession(ws, stdin=options["stdin"], tty=tty, detach_keys=False).run()
    finally:
        ws.close()
    return _ended(end, COMMAND_REFUSED)


def _environment(args: argparse.Namespace) -> list[str]:
    """--env-file lines then -e KEY=VALUE; a bare KEY takes the client's value (left out when
    it has none). `RunOptionError` for an unreadable file."""
    from carte.cli.run_options import env_item, read_env_file

    given = [item for path in args.env_file for item in read_env_file(path)]
    return given + [item for item in map(env_item, args.env) if item]


# --- attach ---------------------------------------------------------------------------------


def attach(session: Session) -> int:
    from carte.cli.stream_session import print_error

    args = session.args
    try:
        location = session.command("ResolveContainer", ref=args.container)
    except (ApiError, DaemonUnreachable) as error:
        print_error(_message(error))
        return COMMAND_REFUSED
    stdin = bool(location.get("open_stdin")) and not args.no_stdin
    tty = bool(location.get("tty"))
    container_id = str(location["id"])
    proxy = args.sig_proxy == "true" and not tty
    end = _attached(session, container_id, start=False, stdin=stdin, tty=tty, sig_proxy=proxy)
    if end is None:
        return COMMAND_REFUSED
    return _ended(end, COMMAND_REFUSED)


def start_attached(session: Session, ref: str, *, stdin: bool) -> int:
    """`carte start -a` of a container with a terminal, and `start -i`: attached before it
    starts, its input too with `stdin` (if it was created with -i); its exit code."""
    from carte.cli.stream_session import print_error

    try:
        location = session.command("ResolveContainer", ref=ref)
    except (ApiError, DaemonUnreachable) as error:
        print_error(_message(error))
        return COMMAND_REFUSED
    tty = bool(location.get("tty"))
    stdin = stdin and bool(location.get("open_stdin"))
    container_id = str(location["id"])
    end = _attached(session, container_id, start=True, stdin=stdin, tty=tty, sig_proxy=not tty)
    if end is None:
        return COMMAND_REFUSED
    return _ended(end, COMMAND_REFUSED)


def _attached(
    session: Session, container_id: str, *, start: bool, stdin: bool, tty: bool, sig_proxy: bool
) -> StreamEnd | None:
    """Attach to the container (starting it with `start`) and stream until the session ends;
    None when the daemon refused the attach (its message printed). With `sig_proxy` Ctrl-C
    sends the container SIGINT."""
    from carte.cli.stream_session import StreamSession

    query = f"start=1&stdin={int(stdin)}" if start else f"stdin={int(stdin)}"
    ws = _open(session, f"/v1/containers/{container_id}/attach?{query}{_size_query()}")
    if ws is None:
        return None
    try:
        return StreamSession(
            ws,
            stdin=stdin,
            tty=tty,
            detach_keys=tty and stdin,
            on_interrupt=(lambda: _signal(session, container_id, "INT")) if sig_proxy else None,
        ).run()
    finally:
        ws.close()


def _message(error: ApiError | DaemonUnreachable) -> str:
    text = error.message if isinstance(error, ApiError) else str(error)
    return text.removeprefix("carte: ")
