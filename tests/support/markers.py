"""What each test needs from the machine, as markers: `root`, `kernel` (a real kernel feature:
namespaces, cgroups, overlayfs, nftables, seccomp), `daemon` (runs a real `carte daemon`),
`vm` (boots a kernel), `peers` (docker, podman, runc, skopeo, a registry or etcd).
Registered in pyproject.toml; set here by place, so a new file in an area gets its area's
markers (a file entry overrides its area's). A test
marked `daemon` that neither uses a daemon fixture nor imports the daemon support (a pure
manifest, policy or route-table test in a daemon area) gets none of these markers.

    pytest -m "not root"            # the in-process tests, as any user, in seconds
    pytest tests/library/net -m "not root"  # one area's pure tests
    pytest -m "not vm and not peers"
"""

from __future__ import annotations

from pathlib import Path

import pytest

DAEMON = ("root", "kernel", "daemon")  # a real `carte daemon` runs containers

NEEDS: dict[str, tuple[str, ...]] = {
    "api": DAEMON,
    "build/test_build_daemon.py": (*DAEMON, "peers"),
    "cli/test_cli_client.py": DAEMON,
    "cli/test_cli_docker_shape.py": DAEMON,
    "cli/test_cli_docker_shape_pull.py": (*DAEMON, "peers"),
    "compose": DAEMON,
    "cluster": (*DAEMON, "peers"),  # daemons in namespaces against a real etcd
    "cluster/test_overlay_encrypted_vm.py": (*DAEMON, "peers", "vm"),  # the same, in a VM
    "containers": DAEMON,
    "crash": DAEMON,  # SIGKILLs real daemons mid-operation (tests/daemon/crash)
    "docker_api": DAEMON,  # the Docker endpoint, driven by the docker CLI and docker-py
    "docker_api/test_docker_vs_dockerd.py": (*DAEMON, "peers"),
    "engine/test_engine_store.py": ("peers",),
    "engine/test_engine_store_daemon.py": (*DAEMON, "peers"),
    "fuzz": DAEMON,  # the API fuzzer; the parser fuzzers use no daemon, so get none
    "fuzz/test_fuzz_tar.py": ("root",),  # owners kept, device nodes made
    "game": DAEMON,
    "game/test_game_cluster.py": (*DAEMON, "peers"),  # the netns lab against a real etcd
    "image/test_image_archive.py": ("root", "peers"),
    "image/test_image_import_devices.py": ("root",),
    "image/test_image_layers.py": ("root", "kernel"),
    "image/test_image_registry.py": ("root", "peers"),
    "image/test_image_registry_token.py": ("root", "peers"),
    "image/test_image_upperdiff.py": ("root", "kernel"),
    "images": (*DAEMON, "peers"),
    "interactive": DAEMON,
    "lifecycle": DAEMON,
    "net/test_net_links.py": ("root", "kernel"),
    "net/test_net_nft.py": ("root", "kernel"),
    "net/test_net_wireguard_vm.py": ("root", "kernel", "vm"),
    "networks": DAEMON,
    "observability": DAEMON,  # /metrics with a real prometheus server, the audit log
    "observability/test_observability_cluster.py": (*DAEMON, "peers"),  # netns lab, etcd, UI
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
    "services/test_services_lb_render.py": ("root",),  # nft -c
    "shim": ("root", "kernel"),
    "stacks": DAEMON,
    "stacks/test_stacks_hardening.py": (),
    "ui": DAEMON,  # the dashboard in headless Chromium (on the cluster: observability/)
}


def needs(path: Path) -> tuple[str, ...]:
    """The markers of a test file: its own entry (``area/file``), else its area's (the folder
    it is in, wherever that folder sits under tests/), else none."""
    area = path.parent.name
    found = NEEDS.get(f"{area}/{path.name}")
    return found if found is not None else NEEDS.get(area, ())


DAEMON_FIXTURES = {"carte", "daemons", "plugin_daemons", "build_daemon"}
DAEMON_MODULES = ("support.daemon", "support.module_daemon", "support.cluster")


def uses_a_daemon(item: pytest.Item) -> bool:
    """Whether a test runs `carte daemon`: through a fixture, or its module's own factory."""
    if DAEMON_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    module = getattr(item, "module", None)
    return any(
        getattr(value, "__module__", "") in DAEMON_MODULES
        for value in vars(module).values()
        if isinstance(value, type)
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marks = needs(item.path)
        if "daemon" in marks and not uses_a_daemon(item):
            marks = ()
        for name in marks:
            item.add_marker(name)
