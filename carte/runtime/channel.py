"""The socket a runtime parent and its forked set-up children talk over while creating.

Messages are small JSON datagrams on an AF_UNIX SOCK_SEQPACKET pair: stage A says "userns"
(write my id maps) and "pid" (stage B's pid); stage B says "ready"; either says "error" with
one line of text and exits. End of file means every child end was closed: after a successful
exec (the child end is close-on-exec) or a crash.
"""

from __future__ import annotations

import os
import socket
from typing import NoReturn

import msgspec

__all__ = ["Message", "channel_pair", "receive", "report_and_exit", "send"]


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message: `kind` is go, userns, mapped, pid, ready or error."""

    kind: str
    pid: int = 0
    text: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Message)


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(parent end, child end); both close-on-exec."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(channel: socket.socket, message: Message) -> None:
    """Send one message. Raises `OSError` if the other side is gone."""
    channel.send(_encoder.encode(message))


def receive(channel: socket.socket) -> Message | None:
    """The next message, or None at end of file."""
    raw = channel.recv(65536)
    return _decoder.decode(raw) if raw else None


def report_and_exit(channel: socket.socket, error: BaseException) -> NoReturn:
    """In a forked child: send `error` as one line and exit 1 without unwinding."""
    if isinstance(error, OSError):
        text = error.strerror or str(error)
    else:
        text = str(error) or type(error).__name__
    try:
        send(channel, Message(kind="error", text=text))
    finally:
        os._exit(1)
