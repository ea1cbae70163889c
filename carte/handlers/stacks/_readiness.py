"""Readiness probes of replicas, with Kubernetes' rules: after `initialDelaySeconds`, one probe
every `periodSeconds`, each given `timeoutSeconds`; `successThreshold` successes in a row make
a replica ready, `failureThreshold` failures in a row make it not ready. A replica starts not
ready. HTTP and TCP probes connect from the daemon (on the host) to the replica's bridge
address; exec probes run through `ExecInContainer`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from carte.stack.model import Readiness

ExecProbe = Callable[[list[str], float], Awaitable[bool]]
Report = Callable[[bool, str], Awaitable[None]]


async def probe_once(probe: Readiness, ip: str, run_exec: ExecProbe) -> tuple[bool, str]:
    """One probe: (passed, why not). Never raises for a failing replica; cancellation
    propagates."""
    timeout = probe.timeoutSeconds
    if probe.exec is not None:
        passed = await run_exec(probe.exec.command, timeout)
        return passed, "" if passed else "exec probe failed"
    port = probe.httpGet.port if probe.httpGet is not None else probe.tcpSocket.port  # type: ignore[union-attr]
    with trio.move_on_after(timeout) as scope:
        try:
            stream = await trio.open_tcp_stream(ip, port)
        except OSError as error:
            return False, f"connect {ip}:{port}: {error.strerror or error}"
        async with stream:
            if probe.httpGet is None:
                return True, ""
            return await _http_get(stream, ip, port, probe.httpGet.path)
    assert scope.cancelled_caught
    return False, f"probe of {ip}:{port} timed out after {timeout:g}s"


async def _http_get(stream: trio.SocketStream, ip: str, port: int, path: str) -> tuple[bool, str]:
    request = f"GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: carte-probe\r\n\r\n"
    try:
        await stream.send_all(request.encode())
        head = b""
        while b"\r\n" not in head and len(head) < 1024:
            chunk = await stream.receive_some(1024)
            if not chunk:
                break
            head += chunk
    except (OSError, trio.BrokenResourceError) as error:
        return False, f"http probe of {ip}:{port}{path}: {error}"
    parts = head.split(b" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        return False, f"http probe of {ip}:{port}{path}: no HTTP status line"
    if 200 <= status < 400:
        return True, ""
    return False, f"http probe of {ip}:{port}{path}: status {status}"


async def watch_readiness(probe: Readiness, ip: str, run_exec: ExecProbe, report: Report) -> None:
    """Probe until cancelled, calling `report(ready, reason)` on every change of readiness."""
    await trio.sleep(probe.initialDelaySeconds)
    ready = False
    successes = failures = 0
    while True:
        passed, reason = await probe_once(probe, ip, run_exec)
        if passed:
            successes, failures = successes + 1, 0
            if not ready and successes >= probe.successThreshold:
                ready = True
                await report(True, "")
        else:
            successes, failures = 0, failures + 1
            if ready and failures >= probe.failureThreshold:
                ready = False
                await report(False, reason)
            elif not ready and failures == probe.failureThreshold:
                await report(False, reason)
        await trio.sleep(probe.periodSeconds)
