"""`carte shim`: the per-container parent process (hidden mode; protocol in docs/shim.md).

    carte shim --id ID --bundle DIR --state-dir DIR --log-path FILE
               [--log-max-size BYTES] [--log-max-file N] [--stdin] [--linger SECONDS]

creates the container and prints one JSON line, then exits: ``{"ok": true, "pid": ...}`` once
the shim (a detached child of it) serves ``STATE_DIR/ID/shim.sock``, or ``{"ok": false,
"error": ..., "code": ...}`` and a non-zero status after cleaning up. The other sub-modes are
internal: ``monitor`` (what the shim execs into after creating), ``exec`` and ``delete`` (short
helpers the monitor runs because they need the full runtime library), and ``factory`` (an
optional warm process that forks shims, see carte.runtime.shim._factory).

This module stays tiny: each sub-mode imports only what it needs, so the lean monitor never
pays for the runtime's imports.
"""

from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[2:]
    mode = argv[0] if argv and not argv[0].startswith("-") else "create"
    if mode == "monitor":
        from carte.runtime.shim._monitor import main as monitor

        monitor(argv[1:])
    elif mode in ("exec", "delete"):
        from carte.runtime.shim._runtime_steps import main as helper

        helper(mode, argv[1:])
    elif mode == "factory":
        from carte.runtime.shim._factory import main as factory

        factory(argv[1:])
    elif mode == "create":
        from carte.runtime.shim._create import main as create

        create(argv[1:] if argv[:1] == ["create"] else argv)
    else:
        print(f"carte shim: unknown mode {mode!r}; this mode is internal to the daemon")
        raise SystemExit(2)
