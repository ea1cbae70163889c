"""Shared test support: real daemons, the busybox image, leftover checks, peers.

`pythonpath = ["tests"]` in the pytest settings makes this package importable from every
test area; the fixtures in `support.fixtures` are loaded by tests/conftest.py for all of them.

- support.daemon: `Daemon`, `DaemonFactory` (real `carte daemon` subprocesses, HTTP over
  their socket, the client against them).
- support.module_daemon: `ModuleDaemon`, a daemon per test module with busybox imported,
  emptied after each test and checked for leftovers after the module.
- support.leftovers: what a daemon may leave on the host (cgroups, state, mounts, processes,
  bridges and veths, nftables tables), found and removed.
- support.containers: checked client calls (`ok`), `inspect`, `wait_for`.
- support.busybox: a busybox rootfs and its tar (also `python tests/support/busybox.py`).
- support.registry: Debian's docker-registry on loopback; support.etcd: a real etcd.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository's root (so a test folder can move without counting parents)."""
