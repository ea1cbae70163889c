"""The reader of Carte's interactive WebSockets behind `docker exec`/`attach`: a short
process's last messages and the close can arrive in one read, and none may be lost (the exit
code was lost then, and the CLI showed 255). Carte's side is played by wsproto's own server
over a socket pair: the frames are real, only their timing is chosen."""

from __future__ import annotations

import json

import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from carte.handlers.docker._carte_api import CarteStream


async def _close_right_after(messages: list[dict[str, object]]) -> list[object]:
    client_end, server_end = trio.testing.memory_stream_pair()
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="carte", target="/v1/containers/x/exec")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    burst = b"".join(server.send(TextMessage(data=json.dumps(m))) for m in messages)
    await server_end.send_all(burst + server.send(CloseConnection(code=1000)))
    stream = CarteStream(client, client_end)
    received = []
    while (message := await stream.receive()) is not None:
        received.append(message)
    return received


def test_messages_before_the_close_in_one_read_are_all_read() -> None:
    sent = [{"type": "started", "pid": 7}, {"type": "exit", "exit_code": 3}]
    assert trio.run(_close_right_after, sent) == sent
