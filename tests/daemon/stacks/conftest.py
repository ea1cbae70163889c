"""Fixtures: one real daemon per test module (busybox imported, networks from a private 10.x
pool no other area uses). After every test its stacks, containers and user networks are
removed; after the module nothing of it is left on the host (bridges, nft tables); see
support/module_daemon.py.

`carte` is the module's daemon; its stacks, containers and networks are removed after the test."""

from __future__ import annotations

from support.module_daemon import daemon_fixtures

CONFIG = 'network:\n  pools: ["10.93.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'


stack_daemon, carte = daemon_fixtures("stack_daemon", config=CONFIG, stacks=True, networks=True)
