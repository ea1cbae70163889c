"""Fixtures: a real daemon subprocess per test module with the busybox image imported, and
cleanup after every test that leaves no container, volume, shim, cgroup or mount behind
(even when the test killed the daemon); see support/module_daemon.py.

`carte` is the module's daemon (restarted if a test killed it); its containers and volumes are
removed afterwards."""

from __future__ import annotations

from support.module_daemon import daemon_fixtures

CONFIG = "containers:\n  log:\n    max_size: 1048576\n    max_file: 2\n"

module_daemon, carte = daemon_fixtures("module_daemon", config=CONFIG, volumes=True)
