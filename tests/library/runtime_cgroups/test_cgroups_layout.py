"""Layout detection from mountinfo, cgroupsPath rules and the OCI value conversions."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from carte.api.errors import InvalidArgument
from carte.runtime.cgroups import (
    LayoutKind,
    LinuxResources,
    V1Cgroup,
    detect_layout,
    normalize_cgroups_path,
    open_cgroup,
)
from carte.runtime.cgroups.layout import parse_mountinfo
from carte.runtime.cgroups.v2 import (
    cpu_weight_from_shares,
    io_weight_from_blkio_weight,
    swap_max_from_spec,
)

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2 = "30 24 0:24 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"


def test_hybrid_mountinfo_is_hybrid_with_comounted_controllers() -> None:
    layout = parse_mountinfo(HYBRID)
    assert layout.kind is LayoutKind.HYBRID
    assert (
        layout.v1_mounts["cpu"] == layout.v1_mounts["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    )
    assert "systemd" not in layout.v1_mounts and "name" not in layout.v1_mounts
    assert layout.unified_mount == Path("/sys/fs/cgroup/unified")


def test_unified_only_and_legacy_only_mountinfo() -> None:
    assert parse_mountinfo(V2).kind is LayoutKind.V2
    legacy = "\n".join(line for line in HYBRID.splitlines() if "cgroup2" not in line)
    assert parse_mountinfo(legacy).kind is LayoutKind.V1


def test_this_host_keeps_its_controllers_where_the_driver_expects() -> None:
    layout = detect_layout()
    if layout.kind is LayoutKind.V2:
        assert layout.unified_mount is not None
    else:
        assert {"memory", "pids", "cpu", "freezer", "devices"} <= layout.v1_controllers
        assert isinstance(open_cgroup("x", layout=layout), V1Cgroup)


def test_cgroups_path_rules() -> None:
    assert normalize_cgroups_path("abc") == "/carte/abc"
    assert normalize_cgroups_path("/podman//abc/") == "/podman/abc"
    for bad in ("", "/", "/carte/../etc", "system.slice:carte:abc"):
        with pytest.raises(InvalidArgument, match=r"linux\.cgroupsPath"):
            normalize_cgroups_path(bad)


def test_oci_conversions_to_v2_values() -> None:
    assert cpu_weight_from_shares(2) == 1
    assert cpu_weight_from_shares(1024) == 39
    assert cpu_weight_from_shares(262144) == 10000
    assert io_weight_from_blkio_weight(10) == 1
    assert io_weight_from_blkio_weight(1000) == 10000
    assert swap_max_from_spec(64, 64) == "0"
    assert swap_max_from_spec(64, 100) == "36"
    assert swap_max_from_spec(64, -1) == "max"
    with pytest.raises(InvalidArgument, match=r"below memory\.limit"):
        swap_max_from_spec(64, 32)


def test_resources_decode_with_the_specs_own_field_names() -> None:
    document = {
        "memory": {"limit": 1, "kernelTCP": 2, "disableOOMKiller": True},
        "cpu": {"realtimeRuntime": 3, "cpus": "0-1"},
        "blockIO": {"throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 5}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4}],
        "devices": [{"allow": False, "access": "rwm"}],
        "unified": {"memory.high": "5"},
        "someExtension": {},
    }
    resources = msgspec.json.decode(msgspec.json.encode(document), type=LinuxResources)
    assert resources.memory is not None and resources.memory.kernel_tcp == 2
    assert resources.cpu is not None and resources.cpu.realtime_runtime == 3
    assert resources.block_io is not None
    assert resources.block_io.throttle_read_iops_device[0].rate == 5
    assert resources.hugepage_limits[0].page_size == "2MB"
    encoded = msgspec.json.decode(msgspec.json.encode(resources))
    del document["someExtension"]
    assert encoded == document
