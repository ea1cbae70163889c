"""The shim driven the way the daemon's trio handler will drive it: no threads, JSON lines."""

from __future__ import annotations

from typing import Any

import trio
from shim_lab import ShimLab

from carte.runtime.shim.client import parse_report
from carte.runtime.shim.protocol import LineBuffer, decode_data, decode_line, encode_line


class _Lines:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = LineBuffer()
        self.queued: list[bytes] = []

    async def request(self, message: dict[str, Any]) -> None:
        await self.stream.send_all(encode_line(message))

    async def next(self) -> dict[str, Any]:
        while not self.queued:
            data = await self.stream.receive_some()
            assert data, "the shim closed the connection"
            self.queued.extend(self.buffer.feed(data))
        return decode_line(self.queued.pop(0))


async def test_trio_handler_creates_attaches_starts_and_waits(shim_lab: ShimLab) -> None:
    container_id = shim_lab.new_id()
    bundle = shim_lab.bundle(["sh", "-c", "echo one; echo two >&2; exit 2"])
    with trio.fail_after(30):
        result = await trio.run_process(
            shim_lab.command(container_id, bundle), capture_stdout=True, check=False
        )
        report = parse_report(result.stdout)
        shim_lab.shim_pids.append(report["shim_pid"])
        async with await trio.open_unix_socket(report["socket"]) as attach_stream:
            attached = _Lines(attach_stream)
            await attached.request({"op": "attach"})
            assert (await attached.next())["ok"]
            async with await trio.open_unix_socket(report["socket"]) as control_stream:
                control = _Lines(control_stream)
                await control.request({"op": "start"})
                assert (await control.next())["state"]["status"] == "running"
                await control.request({"op": "wait"})
                output: dict[str, bytes] = {"stdout": b"", "stderr": b""}
                while (event := await attached.next())["event"] == "output":
                    output[event["stream"]] += decode_data(event["data"])
                assert event == {"event": "exit", **(await control.next())["exit"]}
    assert output == {"stdout": b"one\n", "stderr": b"two\n"}
    assert event["exit_code"] == 2
