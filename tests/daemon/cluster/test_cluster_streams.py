"""The interactive routes over TCP with mutual TLS: from one node of a lab of two network
namespace nodes (a control plane with a real etcd, and a worker that listens too), the CLI
with the admin certificate runs `exec -it` (through a real pty), `exec -i`, `attach`, `cp`
both ways and `logs -f` against containers on the other node and on the control plane.
A client without a certificate is refused in one line."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from support.cluster import LabNode, WorkloadLab

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.peers]

LOOP = "trap 'exit 0' TERM; while true; do sleep 0.1; done"


def _pty_client() -> ModuleType:
    """tests/daemon/interactive/pty_client.py (a sibling test folder, not a package)."""
    path = Path(__file__).parents[1] / "interactive" / "pty_client.py"
    spec = importlib.util.spec_from_file_location("pty_client", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ListeningLab(WorkloadLab):
    """Workers listen on their LAN address too, so clients reach their containers."""

    def config(self, node: LabNode, *, control: bool) -> str:
        text = super().config(node, control=control)
        if control:
            return text
        return text.replace(
            f"cluster: {{name: {node.name},",
            f"cluster: {{name: {node.name}, listen: {node.listen},",
        )


@pytest.fixture(scope="module")
def lab(busybox_tar: Path) -> Iterator[ListeningLab]:
    with ListeningLab(2, pool="10.95.0.0/16:24", node_ttl=5, leader_ttl=5).formed(
        busybox_tar
    ) as lab:
        yield lab


def remote(
    lab: ListeningLab, target: LabNode, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """The CLI in the first node's namespace against ``target``'s TCP address (admin cert)."""
    result = subprocess.run(
        [*lab.command(lab.nodes[0]), "-H", target.listen, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, CARTE_CERT_PATH=str(lab.certs)),
    )
    return result


@pytest.mark.parametrize("where", [1, 0], ids=["worker", "control-plane"])
def test_exec_attach_cp_and_logs_over_mutual_tls(
    lab: ListeningLab, where: int, tmp_path: Path
) -> None:
    target = lab.nodes[where]
    name = f"remote{where}"
    lab.carte(target, "run", "-d", "--name", name, "busybox", "sh", "-c", LOOP)

    said = remote(lab, target, "exec", name, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (said.returncode, said.stdout, said.stderr) == (3, "out\n", "err\n"), said
    piped = remote(lab, target, "exec", "-i", name, "cat", stdin="through tls\n" * 2000)
    assert piped.returncode == 0 and piped.stdout == "through tls\n" * 2000, piped.stderr

    pty = _pty_client()
    argv = [*lab.command(lab.nodes[0]), "-H", target.listen, "exec", "-it", name, "sh"]
    client = pty.PtyClient(argv, dict(os.environ, CARTE_CERT_PATH=str(lab.certs)))
    try:
        client.expect(b"# ")
        client.send(b"echo $((6*7)) $(hostname)\r")
        client.expect(b"42")
        client.send(b"exit 5\r")
        assert client.wait() == 5
    finally:
        client.close()

    source = tmp_path / "in.txt"
    source.write_text("copied over tls\n")
    copied = remote(lab, target, "cp", str(source), f"{name}:/tmp/in.txt")
    assert copied.returncode == 0, copied.stderr
    back = tmp_path / "back.txt"
    fetched = remote(lab, target, "cp", f"{name}:/tmp/in.txt", str(back))
    assert fetched.returncode == 0 and back.read_text() == "copied over tls\n", fetched.stderr

    echo = f"echo{where}"
    script = "while read line; do echo got $line; done; echo bye; exit 4"
    lab.carte(target, "run", "-d", "-i", "--name", echo, "busybox", "sh", "-c", script)
    attached = remote(lab, target, "attach", echo, stdin="one\ntwo\n")
    assert attached.returncode == 4, attached.stderr
    assert attached.stdout.splitlines()[-3:] == ["got one", "got two", "bye"]

    talker = f"talker{where}"
    lab.carte(
        target,
        "run",
        "-d",
        "--name",
        talker,
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line $i; sleep 0.3; done",
    )
    followed = remote(lab, target, "logs", "-f", talker)
    assert followed.returncode == 0 and followed.stdout.splitlines() == [
        "line 1",
        "line 2",
        "line 3",
    ]

    lab.carte(target, "rm", "-f", name, echo, talker)


def test_a_client_without_a_certificate_is_refused(lab: ListeningLab, tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes((lab.certs / "ca.pem").read_bytes())
    result = subprocess.run(
        [*lab.command(lab.nodes[0]), "-H", lab.nodes[1].listen, "exec", "nothing", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, CARTE_CERT_PATH=str(tmp_path)),
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert "client certificate" in lines[0]
