"""`--ipc shareable` and `--ipc container:NAME` as Docker runs them (issue 11): the joiner is
in the donor's IPC namespace and sees the same /dev/shm (a tmpfs on the host, mounted for the
donor and gone with it); a donor that is not shareable, or not running, is refused with the
reason and nothing is created."""

from __future__ import annotations

from pathlib import Path

from support.containers import ok
from support.daemon import Daemon


def shell(carte: Daemon, *argv: str) -> str:
    return ok(carte.client(*argv)).strip()


def test_a_joiner_shares_the_donors_ipc_namespace_and_dev_shm(carte: Daemon) -> None:
    donor = shell(
        carte, "run", "-d", "--name", "donor", "--ipc", "shareable", "busybox", "sleep", "60"
    )
    shell(carte, "exec", "donor", "sh", "-c", "echo from-donor > /dev/shm/note")
    donor_ns = shell(carte, "exec", "donor", "readlink", "/proc/self/ns/ipc")
    probe = "readlink /proc/self/ns/ipc; cat /dev/shm/note; echo from-joiner > /dev/shm/back"
    joined = shell(carte, "run", "--rm", "--ipc", "container:donor", "busybox", "sh", "-c", probe)
    assert joined.splitlines() == [donor_ns, "from-donor"]
    assert shell(carte, "exec", "donor", "cat", "/dev/shm/back") == "from-joiner"
    private = shell(carte, "run", "--rm", "busybox", "readlink", "/proc/self/ns/ipc")
    assert private != donor_ns
    assert donor in Path("/proc/self/mountinfo").read_text()  # the host-side tmpfs
    ok(carte.client("rm", "-f", "donor"))
    assert donor not in Path("/proc/self/mountinfo").read_text()


def test_joining_a_donor_that_is_not_shareable_or_not_running_is_refused(carte: Daemon) -> None:
    shell(carte, "run", "-d", "--name", "plain", "busybox", "sleep", "60")
    shell(carte, "create", "--name", "idle", "--ipc", "shareable", "busybox", "sleep", "60")
    before = shell(carte, "ps", "-aq")
    for donor, reason in (("plain", "it is not shareable"), ("idle", "it is not running")):
        done = carte.client("run", "-d", "--ipc", f"container:{donor}", "busybox", "true")
        assert done.returncode != 0, done.stdout
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f'"{donor}"' in lines[0] and reason in lines[0], done.stderr
    assert shell(carte, "ps", "-aq") == before
