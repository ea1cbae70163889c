"""Fixtures: a real daemon per test module (busybox imported) whose networks come from a
private 10.x pool and whose DNS forwards to a closed loopback port; after every test its
containers and user networks are removed, and after the module nothing of it is left on the
host: no bridge, veth or nftables table (support/module_daemon.py)."""

from __future__ import annotations

from networks_lab import network_config
from support.module_daemon import daemon_fixtures

net_daemon, carte = daemon_fixtures("net_daemon", config=network_config(), networks=True)
