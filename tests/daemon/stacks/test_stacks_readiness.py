"""Readiness probe rules (Kubernetes'): thresholds, periods and initial delay, timed with
trio's MockClock; and real HTTP/TCP probes against a loopback server."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing

from carte.handlers.stacks._readiness import probe_once, watch_readiness
from carte.stack.model import ExecAction, HttpGet, Readiness, TcpSocket


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def _run(probe: Readiness, results: list[bool], until: float) -> list[tuple[float, bool]]:
    """Run the exec probe loop over scripted exit results (then failing) until `until`."""
    changes: list[tuple[float, bool]] = []
    queue = list(results)
    start = trio.current_time()

    async def run_exec(cmd: list[str], limit: float) -> bool:
        return queue.pop(0) if queue else False

    async def report(ready: bool, reason: str) -> None:
        changes.append((round(trio.current_time() - start, 3), ready))

    with trio.move_on_after(until):
        await watch_readiness(probe, "127.0.0.1", run_exec, report)
    return changes


async def test_thresholds_and_periods(autojump_clock: trio.testing.MockClock) -> None:
    probe = Readiness(
        exec=ExecAction(command=["true"]),
        initialDelaySeconds=5,
        periodSeconds=2,
        successThreshold=2,
        failureThreshold=3,
    )
    # probes at 5, 7, 9, 11, 13, 15, 17: ok ok ok fail fail fail ...
    changes = await _run(probe, [True, True, True, False, False, False], until=20)
    assert changes == [(7.0, True), (15.0, False)]


async def test_defaults_are_kubernetes(autojump_clock: trio.testing.MockClock) -> None:
    probe = Readiness(exec=ExecAction(command=["true"]))
    assert (probe.periodSeconds, probe.timeoutSeconds, probe.failureThreshold) == (10, 1, 3)
    changes = await _run(probe, [False, False, False, True], until=35)
    assert changes == [(20.0, False), (30.0, True)]


async def test_http_and_tcp_probes_against_a_real_server() -> None:
    async def handler(stream: trio.SocketStream) -> None:
        request = await stream.receive_some(1024)
        status = b"200 OK" if request.startswith(b"GET /ok ") else b"503 Unavailable"
        await stream.send_all(b"HTTP/1.0 " + status + b"\r\n\r\n")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]

        async def no_exec(cmd: list[str], limit: float) -> bool:
            raise AssertionError("no exec probe here")

        good = Readiness(httpGet=HttpGet(path="/ok", port=port))
        bad = Readiness(httpGet=HttpGet(path="/nope", port=port))
        tcp = Readiness(tcpSocket=TcpSocket(port=port))
        assert await probe_once(good, "127.0.0.1", no_exec) == (True, "")
        passed, reason = await probe_once(bad, "127.0.0.1", no_exec)
        assert not passed and "status 503" in reason
        assert (await probe_once(tcp, "127.0.0.1", no_exec))[0]
        nursery.cancel_scope.cancel()
    closed = Readiness(tcpSocket=TcpSocket(port=port))
    passed, reason = await probe_once(closed, "127.0.0.1", no_exec)
    assert not passed and "connect 127.0.0.1" in reason
