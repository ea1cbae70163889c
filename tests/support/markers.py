"""What each test needs from the machine, as markers: `root`, `kernel` (a real kernel feature:
namespaces, cgroups, overlayfs, nftables, seccomp), `vm` (boots a kernel), `peers` (docker,
podman, runc, skopeo, a registry or etcd). Registered in pyproject.toml; set here by place,
so a new file in an area gets its area's markers (a file entry overrides its area's).

    pytest -m "not root"            # the in-process tests, as any user, in seconds
    pytest tests/net -m "not root"  # one area's pure tests
    pytest -m "not vm and not peers"
"""

from __future__ import annotations

from pathlib import Path

import pytest

DAEMON = ("root", "kernel")  # a real `carte daemon` runs containers

NEEDS: dict[str, tuple[str, ...]] = {
    "api": DAEMON,
    "build/test_build_daemon.py": (*DAEMON, "peers"),
    "cli/test_cli_client.py": DAEMON,
    "containers": DAEMON,
    "engine/test_engine_store.py": ("peers",),
    "engine/test_engine_store_daemon.py": (*DAEMON, "peers"),
    "game": DAEMON,
    "image/test_image_archive.py": ("root", "peers"),
    "image/test_image_import_devices.py": ("root",),
    "image/test_image_layers.py": ("root", "kernel"),
    "image/test_image_registry.py": ("root", "peers"),
    "image/test_image_registry_token.py": ("root", "peers"),
    "image/test_image_upperdiff.py": ("root", "kernel"),
    "images": (*DAEMON, "peers"),
    "interactive": DAEMON,
    "lifecycle": DAEMON,
    "lifecycle/test_lifecycle_health_logic.py": (),
    "lifecycle/test_lifecycle_restart_logic.py": (),
    "net/test_net_links.py": ("root", "kernel"),
    "net/test_net_nft.py": ("root", "kernel"),
    "networks": DAEMON,
    "packaging": DAEMON,
    "plugins": DAEMON,
    "plugins/test_plugins_docs.py": (),
    "plugins/test_plugins_kit.py": (),
    "runtime": ("root", "kernel"),
    "runtime/test_runtime_podman.py": ("root", "kernel", "peers"),
    "runtime_cgroups": ("root", "kernel"),
    "runtime_cgroups/test_cgroups_v2_kernel.py": ("root", "kernel", "vm"),
    "runtime_security": ("root", "kernel"),
    "services": DAEMON,
    "shim": ("root", "kernel"),
    "stacks": DAEMON,
    "stacks/test_stacks_hardening.py": (),
    "stacks/test_stacks_manifest.py": (),
    "stacks/test_stacks_readiness.py": (),
}


def needs(path: Path) -> tuple[str, ...]:
    """The markers of a test file: its own entry (``area/file``), else its area's (the folder
    it is in, wherever that folder sits under tests/), else none."""
    area = path.parent.name
    found = NEEDS.get(f"{area}/{path.name}")
    return found if found is not None else NEEDS.get(area, ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in needs(item.path):
            item.add_marker(name)
