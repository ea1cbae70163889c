"""`carte run --init`: the init at PID 1 holds no more than the workload it starts (issue 11
item 8) and shows as `carte-init`; the shim on the host shows as `carte-shim -id ID`.

Before, PID 1 kept every capability, no seccomp filter and no no_new_privs while the workload
was restricted, and its command line named the host's Python interpreter and paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from lifecycle_lab import NO_NET, exec_ok
from support.containers import inspect, ok
from support.daemon import Daemon

_FIELDS = ("Uid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")
# PID 1's status, then the workload's (PID 1's first child: the `sleep`).
_BOTH_STATUSES = (
    'cat /proc/1/status; echo ===; cat /proc/$(cut -d" " -f1 /proc/1/task/1/children)/status'
)


def _restrictions(status: str) -> dict[str, str]:
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {name: fields[name].strip() for name in _FIELDS}


@pytest.mark.parametrize("user", ["root", "1000:1000"])
def test_init_drops_to_the_workloads_restrictions(carte: Daemon, user: str) -> None:
    name = "restricted-" + user.split(":")[0]
    ok(
        carte.client(
            "run", "-d", *NO_NET, "--init", "--user", user, "--name", name,
            "busybox", "sleep", "1000",
        )
    )  # fmt: skip
    init_status, workload_status = exec_ok(carte, name, "sh", "-c", _BOTH_STATUSES).split("===")
    init, workload = _restrictions(init_status), _restrictions(workload_status)
    assert init == workload
    assert init["NoNewPrivs"] == "1"
    assert init["Seccomp"] == "2", "PID 1 runs without the container's seccomp filter"
    assert int(init["CapBnd"], 16) != (1 << 41) - 1, "PID 1 kept every capability"
    assert init["Uid"].split()[0] == ("0" if user == "root" else "1000")


def test_init_and_shim_show_short_command_lines(carte: Daemon) -> None:
    ok(carte.client("run", "-d", *NO_NET, "--init", "--name", "titled", "busybox", "sleep", "1000"))
    assert exec_ok(carte, "titled", "cat", "/proc/1/cmdline") == "carte-init\0"
    assert exec_ok(carte, "titled", "cat", "/proc/1/comm").strip() == "carte-init"
    table = ok(carte.client("top", "titled"))
    commands = [row.split(None, 7)[7] for row in table.splitlines()[1:]]
    assert commands == ["carte-init", "sleep 1000"], table
    assert "python" not in table and str(Path.cwd()) not in table

    record = inspect(carte, "titled")
    pid_one = int(record["state"]["pid"])
    stat = Path(f"/proc/{pid_one}/stat").read_text()
    shim = int(stat[stat.rindex(")") + 2 :].split()[1])
    shim_cmdline = Path(f"/proc/{shim}/cmdline").read_bytes()
    assert shim_cmdline == f"carte-shim -id {record['id']}\0".encode()
    assert Path(f"/proc/{shim}/comm").read_text().strip() == "carte-shim"
