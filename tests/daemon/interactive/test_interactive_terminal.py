"""`run -it`, `exec -it` and `attach` through a real pty against a real daemon."""

from __future__ import annotations

import signal
import termios
from collections.abc import Iterator

import pytest
from pty_client import PtyClient
from support.containers import inspect, ok, wait_for
from support.daemon import Daemon


@pytest.fixture
def terminal(carte: Daemon) -> Iterator[list[PtyClient]]:
    clients: list[PtyClient] = []
    yield clients
    for client in clients:
        client.close()


def spawn(carte: Daemon, clients: list[PtyClient], *args: str, **size: int) -> PtyClient:
    argv = [*carte.command, "--host", f"unix://{carte.socket}", *args]
    client = PtyClient(argv, carte.env, **size)
    clients.append(client)
    return client


def shell(carte: Daemon, clients: list[PtyClient], *args: str, **size: int) -> PtyClient:
    """`spawn` a client whose command runs a shell in the container; returns at its prompt."""
    client = spawn(carte, clients, *args, **size)
    client.expect(b"# ")
    return client


def attached(carte: Daemon, clients: list[PtyClient], container: str) -> PtyClient:
    """`carte attach CONTAINER` in a client, once it has put its terminal in raw mode."""
    client = spawn(carte, clients, "attach", container)
    wait_for(lambda: client.is_raw(), what="the client's terminal in raw mode")
    return client


def test_run_it_shell_computes_and_exits_with_its_code(
    carte: Daemon, terminal: list[PtyClient]
) -> None:
    client = shell(carte, terminal, "run", "-it", "--rm", "busybox", "sh")
    client.send(b"echo $((6*7))\r")
    client.expect(b"42")
    client.send(b"exit 3\r")
    assert client.wait() == 3
    restored = termios.tcgetattr(client.slave)
    assert restored == client.saved_attrs, "the client left the terminal in raw mode"
    assert restored[3] & termios.ECHO and restored[3] & termios.ICANON
    wait_for(lambda: not ok(carte.client("ps", "-aq")).strip(), what="--rm removal")


def test_run_it_terminal_size_follows_the_window(carte: Daemon, terminal: list[PtyClient]) -> None:
    client = shell(carte, terminal, "run", "-it", "--rm", "busybox", "sh", rows=30, cols=100)
    client.send(b"stty size\r")
    client.expect(b"30 100")
    client.resize(40, 120)
    client.send(b"stty size\r")
    client.expect(b"40 120")
    client.send(b"exit\r")
    assert client.wait() == 0


def test_ctrl_c_interrupts_the_foreground_command_not_the_client(
    carte: Daemon, terminal: list[PtyClient]
) -> None:
    client = shell(carte, terminal, "run", "-it", "--name", "term-int", "busybox", "sh")
    client.send(b"sleep 100\r")
    wait_for(lambda: "sleep 100" in ok(carte.client("top", "term-int")), what="sleep running")
    client.send(b"\x03")
    client.expect(b"# ", timeout=10)
    client.send(b"echo status=$?\r")
    client.expect(b"status=130")
    client.send(b"exit 0\r")
    assert client.wait() == 0


def test_exec_it_gets_its_own_terminal(carte: Daemon, terminal: list[PtyClient]) -> None:
    ok(carte.client("run", "-d", "--name", "term-exec", "busybox", "sleep", "1000"))
    client = shell(carte, terminal, "exec", "-it", "term-exec", "sh", rows=25, cols=90)
    client.send(b"tty; stty size; echo $((6*7))\r")
    client.expect(b"/dev/pts/")
    client.expect(b"25 90")
    client.expect(b"42")
    client.resize(33, 101)
    client.send(b"stty size\r")
    client.expect(b"33 101")
    client.send(b"exit 4\r")
    assert client.wait() == 4
    assert inspect(carte, "term-exec")["state"]["status"] == "running"


def test_attach_then_detach_keys_leave_it_running(carte: Daemon, terminal: list[PtyClient]) -> None:
    ok(carte.client("run", "-dit", "--name", "term-attach", "busybox", "sh"))
    client = attached(carte, terminal, "term-attach")
    client.send(b"echo $((2+3))x\r")
    client.expect(b"5x")
    client.send(b"\x10\x11")
    assert client.wait() == 0
    assert inspect(carte, "term-attach")["state"]["status"] == "running"
    again = attached(carte, terminal, "term-attach")
    again.send(b"exit 6\r")
    assert again.wait() == 6


def test_terminal_is_restored_when_the_client_is_terminated(
    carte: Daemon, terminal: list[PtyClient]
) -> None:
    client = shell(carte, terminal, "run", "-it", "--name", "term-kill", "busybox", "sh")
    assert client.is_raw()
    client.process.send_signal(signal.SIGTERM)
    assert client.wait() == 128 + signal.SIGTERM
    assert termios.tcgetattr(client.slave) == client.saved_attrs
    assert inspect(carte, "term-kill")["state"]["status"] == "running", "only the client ended"
