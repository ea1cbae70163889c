"""The shim's wire format: JSON lines over a unix stream socket (see docs/shim.md).

Both ends use this module: the shim's monitor, whose memory budget is tight, and clients. It
therefore encodes and decodes with the C accelerator behind the standard `json` module directly,
which costs no memory, instead of importing `json` (which pulls in `re`, about 1 MB).
"""

from __future__ import annotations

import _json
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SOCKET_NAME = "shim.sock"
EXIT_FILE = "exit.json"
# A request line longer than this is refused and its connection closed.
MAX_LINE = 1 << 20


class ProtocolError(Exception):
    """A line that is not one JSON object."""


def _refuse(value: object) -> object:
    raise TypeError(f"{type(value).__name__} cannot be sent to or from the shim")


_encode = _json.make_encoder(
    None, _refuse, _json.encode_basestring, None, ":", ",", False, False, False
)


class _ScanContext:
    """The attributes the C scanner reads from its context (json.JSONDecoder has the same)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ProtocolError(f"{name} is not allowed")


_scan = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]


def encode_line(message: dict[str, Any]) -> bytes:
    """One message as a JSON line (UTF-8, newline-terminated)."""
    return ("".join(_encode(message, 0)) + "\n").encode()


def decode_line(line: bytes) -> dict[str, Any]:
    """One JSON line as a dict. Raises ProtocolError when it is not a JSON object."""
    try:
        text = line.decode().strip()
        value, end = _scan(text, 0)
    except (UnicodeDecodeError, StopIteration, ValueError) as error:
        raise ProtocolError(f"not a JSON line: {error}") from None
    if end != len(text) or not isinstance(value, dict):
        raise ProtocolError("not a single JSON object")
    return value


def encode_data(data: bytes) -> str:
    """Bytes as the base64 text used for stdio in `data` fields."""
    import binascii  # imported on first use: a shim nobody attaches to never needs it

    return binascii.b2a_base64(data, newline=False).decode()


def decode_data(text: str) -> bytes:
    """The bytes of a base64 `data` field. Raises ProtocolError when it is not base64."""
    import binascii

    try:
        return binascii.a2b_base64(text)
    except binascii.Error as error:
        raise ProtocolError(f"data is not base64: {error}") from None


def output_event(stream: str, data: bytes) -> bytes:
    """The line ``{"event":"output","stream":STREAM,"data":BASE64}``, built without the
    intermediate copies a dict would cost (it is the shim's hottest path)."""
    import binascii

    return b"".join(
        (
            b'{"event":"output","stream":"',
            stream.encode(),
            b'","data":"',
            binascii.b2a_base64(data, newline=False),
            b'"}\n',
        )
    )


class LineBuffer:
    """Splits a byte stream into lines; `feed` returns the complete ones."""

    def __init__(self) -> None:
        self._data = b""

    def feed(self, data: bytes) -> list[bytes]:
        """The complete lines in what arrived so far. Raises ProtocolError past MAX_LINE."""
        self._data += data
        *lines, self._data = self._data.split(b"\n")
        if len(self._data) > MAX_LINE:
            raise ProtocolError(f"a line longer than {MAX_LINE} bytes")
        return lines


# sun_path holds 108 bytes; longer socket paths are reached through the directory's fd.
_MAX_SOCKET_PATH = 100


class UnixAddress:
    """An address for a socket path that fits sun_path, valid while this object is open.

    A long path is reached as /proc/self/fd/N/NAME, N an O_PATH fd of its directory; `close`
    (or leaving the `with` block) closes that fd. Only the process that made it may use it.
    """

    def __init__(self, path: str) -> None:
        self._dir_fd = -1
        self.address = path
        if len(path.encode()) > _MAX_SOCKET_PATH:
            directory, name = os.path.split(path)
            self._dir_fd = os.open(directory or ".", os.O_PATH | os.O_CLOEXEC)
            self.address = f"/proc/self/fd/{self._dir_fd}/{name}"

    def close(self) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1

    def __enter__(self) -> str:
        return self.address

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_FD_SIZE = 4  # sizeof(int) in an SCM_RIGHTS payload


def fds_in(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The file descriptors an SCM_RIGHTS message carried (from `recvmsg`'s ancillary data)."""
    import _socket

    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % _FD_SIZE
            fds.extend(memoryview(payload)[:usable].cast("i"))
    return fds


def rights(fds: list[int]) -> list[tuple[int, int, bytes]]:
    """Ancillary data for `sendmsg` passing `fds` (SCM_RIGHTS)."""
    import _socket
    import sys

    payload = b"".join(fd.to_bytes(_FD_SIZE, sys.byteorder, signed=True) for fd in fds)
    return [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, payload)]


def fd_space(count: int) -> int:
    """The ancillary buffer size `recvmsg` needs to receive up to `count` fds."""
    import _socket

    return _socket.CMSG_SPACE(count * _FD_SIZE)
