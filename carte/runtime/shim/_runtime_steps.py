"""Short-lived helpers the shim's monitor runs for work that needs the full runtime library.

`carte shim exec CONFIG` starts a process in the running container with the runtime's
`exec_process`. The monitor runs it in a fork of itself (`_exec.fork_helper`); the command stays
for monitors started by an older Carte, which still exec it. The fields of the OCI process the
request leaves out are the container's own, so capabilities, rlimits and noNewPrivileges follow
the container unless the request says otherwise. Its stdio is the helper's fds 0-2 (the client's
fds, passed over shim.sock), or a pty from the container's own devpts when `process.terminal` is
set. The helper reports one line on fd 3, ``{"pid": N}`` (with the pty master attached by
SCM_RIGHTS for a terminal) or ``{"error": "..."}``, and exits: the process is then re-parented
to the shim (a child subreaper), which reaps it and reports its exit code.

`carte shim delete CONFIG` removes the container with the runtime's `delete` (cgroup, state
directory) and reports ``{}`` or ``{"error": ...}`` on fd 3.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

REPORT_FD = 3


def main(mode: str, argv: list[str]) -> NoReturn:
    from carte.runtime.shim.protocol import decode_line

    report = socket.socket(fileno=REPORT_FD)
    try:
        config = decode_line(argv[0].encode())
        if mode == "exec":
            pid, master = _exec(config)
            _send(report, {"pid": pid}, [master] if master >= 0 else [])
        else:
            _delete(config)
            _send(report, {}, [])
    except Exception as error:
        from carte.api.errors import CarteError

        text = error.message if isinstance(error, CarteError) else f"{error}"
        _send(report, {"error": text}, [])
        os._exit(1)
    os._exit(0)


def _send(report: socket.socket, message: dict[str, Any], fds: list[int]) -> None:
    from carte.runtime.shim.protocol import encode_line

    socket.send_fds(report, [encode_line(message)], fds)


def _exec(config: dict[str, Any]) -> tuple[int, int]:
    import msgspec

    from carte.runtime.container import exec_process
    from carte.runtime.shim._console import ExecConsole
    from carte.runtime.shim._signals import default_dispositions_for_children
    from carte.runtime.spec import Process, load_spec
    from carte.runtime.state import load_record

    state_dir = Path(config["state_dir"])
    container_id = str(config["id"])
    record = load_record(state_dir, container_id)
    spec = load_spec(Path(record.bundle) / "config.json")
    # Fields the request leaves out are the container's own (capabilities, rlimits,
    # noNewPrivileges, user...), so an exec is never more privileged than its container.
    fields = msgspec.to_builtins(spec.process) if spec.process is not None else {}
    fields.update(config["process"])
    try:
        process = msgspec.convert(fields, Process)
    except msgspec.ValidationError as error:
        from carte.api.errors import InvalidArgument

        raise InvalidArgument(f"exec process: {error}; fix that field") from None
    seccomp_profile = spec.linux.seccomp
    console = ExecConsole() if process.terminal else None
    try:
        with default_dispositions_for_children():
            pid = exec_process(
                state_dir,
                container_id,
                process,
                stdio=None if console is not None else (0, 1, 2),
                console_socket=Path(console.address) if console is not None else None,
                seccomp_profile=seccomp_profile,
            )
        master = console.receive_master() if console is not None else -1
    finally:
        if console is not None:
            console.close()
    return pid, master


def _delete(config: dict[str, Any]) -> None:
    from carte.runtime.container import delete

    delete(Path(config["state_dir"]), str(config["id"]), force=True)
