"""A tiny HTTP/1.1 client over a unix socket, with streamed NDJSON.

Written on the C `_socket` module because `http.client`, and even the `socket` module
(selectors, enum: ~3 ms), cost import time on every client start. One request per connection
(``Connection: close``); responses are read by Content-Length, chunked transfer encoding, or
until the daemon closes.
"""

from __future__ import annotations

import _socket
import io
import os

from carte.cli import compact_json

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

DEFAULT_SOCKET = "/run/carte/carte.sock"


class DaemonUnreachable(Exception):
    """No daemon answers at the socket; `str()` is the one line to show the user."""


class ApiError(Exception):
    """The daemon answered with an error body; `message` is its one-line explanation."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def socket_path_from_host(host: str | None) -> str:
    """Resolve `--host` / `CARTE_HOST` (``unix:///path``, ``unix:/path`` or a path) to a path.

    Raises ValueError naming the value when it is not a unix socket address.
    """
    value = host or os.environ.get("CARTE_HOST") or f"unix://{DEFAULT_SOCKET}"
    if value.startswith("unix://"):
        return value[len("unix://") :]
    if value.startswith("unix:"):
        return value[len("unix:") :]
    if value.startswith("/"):
        return value
    raise ValueError(
        f'host "{value}" is neither a unix socket nor tcp://HOST:PORT; use '
        "unix:///path/to/carte.sock or tcp://HOST:PORT"
    )


def client_for_host(host: str | None) -> Client:
    """The client for `--host` / `CARTE_HOST`: a unix socket, or ``tcp://HOST:PORT`` over
    mutual TLS with the certificates of `cert_path()` (ssl is imported only then).

    Raises ValueError naming the value when it is neither.
    """
    value = host or os.environ.get("CARTE_HOST") or ""
    if value.startswith("tcp://"):
        address, _, port = value[len("tcp://") :].rpartition(":")
        if not address or not port.isdigit():
            raise ValueError(f'host "{value}" is not tcp://HOST:PORT')
        return TlsClient(address.strip("[]"), int(port))
    return Client(socket_path_from_host(host))


def cert_path() -> str:
    """Where the client's ca.pem, cert.pem and key.pem are (Docker's --tlsverify layout)."""
    return os.environ.get("CARTE_CERT_PATH") or os.path.join(os.path.expanduser("~"), ".carte")


class _SocketRaw(io.RawIOBase):
    """The raw stream under a buffered reader of a `_socket.socket` (what `makefile("rb")`
    gives a `socket.socket`)."""

    def __init__(self, sock: _socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._sock.recv_into(buffer)


def reader_of(sock: _socket.socket) -> io.BufferedReader:
    """A buffered binary reader (readline, read, read1) of `sock`."""
    return io.BufferedReader(_SocketRaw(sock), 65536)


class Response:
    """Status, lower-cased headers and a body reader over one connection."""

    def __init__(self, sock: _socket.socket, reader: Any) -> None:
        self._sock = sock
        self._reader = reader
        status_line = reader.readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2:
            raise DaemonUnreachable("the daemon closed the connection without answering")
        self.status = int(parts[1])
        self.headers: dict[str, str] = {}
        while True:
            line = reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def chunks(self) -> Iterator[bytes]:
        """The body in pieces as they arrive."""
        reader = self._reader
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = reader.readline()
                if not size_line:
                    return
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    return
                data = reader.read(size)
                reader.readline()
                yield data
        elif "content-length" in self.headers:
            yield reader.read(int(self.headers["content-length"]))
        else:
            while data := reader.read1(65536):
                yield data

    def body(self) -> bytes:
        return b"".join(self.chunks())

    def lines(self) -> Iterator[bytes]:
        """Complete lines of an NDJSON body as they arrive, without the newline."""
        pending = b""
        for chunk in self.chunks():
            pending += chunk
            *complete, pending = pending.split(b"\n")
            yield from (line for line in complete if line)
        if pending:
            yield pending

    def close(self) -> None:
        self._reader.close()
        self._sock.close()


def send_request(sock: _socket.socket, pieces: Iterable[bytes]) -> Response:
    """Send a request's `pieces` (its head, then its body) and read the daemon's answer.

    The daemon may answer before it has read the whole body (a 413 for a body over its
    limit) and then read no more, or close: over the unix socket the sending stops once an
    answer is there to read, and a send the daemon cut (EPIPE, ECONNRESET) ends in reading its
    answer all the same (raising the send's error when it closed without one).
    """
    try:
        if hasattr(sock, "cipher"):  # TLS: records arrive that are no answer; a cut is seen
            for piece in pieces:
                sock.sendall(piece)
        else:
            _send_until_answered(sock, pieces)
    except (BrokenPipeError, ConnectionResetError) as error:
        try:
            return Response(sock, reader_of(sock))
        except (DaemonUnreachable, OSError):
            sock.close()
            raise error from None
    return Response(sock, reader_of(sock))


def _send_until_answered(sock: _socket.socket, pieces: Iterable[bytes]) -> None:
    """Send without blocking; only when the socket is full, wait for room or an answer (a
    request that fits the socket's buffer, most of them, needs no poll nor `select`)."""
    poller = None
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        for piece in pieces:
            view = memoryview(piece)
            while view:
                try:
                    view = view[sock.send(view) :]
                    continue
                except BlockingIOError:
                    pass
                if poller is None:
                    import select

                    poller = select.poll()
                    poller.register(sock, select.POLLIN | select.POLLOUT)
                if any(events & ~select.POLLOUT for _fd, events in poller.poll()):
                    return  # answered (or closed) before the whole body was sent
    finally:
        sock.settimeout(timeout)


class Client:
    """Talks to one daemon socket. Every call opens its own connection."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    def open(self, method: str, path: str, body: bytes | None = None) -> Response:
        """Send a request and read the status and headers.

        Raises DaemonUnreachable when nothing listens at the socket, ApiError for an error
        status (the body is read and closed then).
        """
        sock = self.connect()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: carte\r\nConnection: close\r\n"
            f"Content-Length: {len(body or b'')}\r\n"
        )
        if body is not None:
            head += "Content-Type: application/json\r\n"
        response = send_request(sock, (head.encode() + b"\r\n", body or b""))
        if response.status >= 400:
            raw = response.body()
            response.close()
            raise api_error(response.status, raw)
        return response

    def connect(self) -> Any:
        """A connected socket to the daemon (for streams that speak beyond one request, as
        WebSockets do). Raises DaemonUnreachable with the one line to show."""
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(self.socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as error:
            sock.close()
            raise DaemonUnreachable(self._unreachable(error.strerror or str(error))) from None
        except PermissionError:
            sock.close()
            raise DaemonUnreachable(
                f"carte: permission denied on {self.socket_path}; run as root or join the "
                "carte group (root-equivalent)"
            ) from None
        return sock

    def get_json(self, path: str) -> Any:
        response = self.open("GET", path)
        try:
            return compact_json.loads(response.body())
        finally:
            response.close()

    def post_json(self, path: str, payload: Any) -> Any:
        response = self.open("POST", path, compact_json.dumps(payload).encode())
        try:
            return compact_json.loads(response.body())
        finally:
            response.close()

    def _unreachable(self, reason: str) -> str:
        return (
            f"carte: no daemon at unix://{self.socket_path} ({reason}); start one with "
            "`carte daemon &` or ./install.sh, or point --host/CARTE_HOST at its socket"
        )


def api_error(status: int, raw: bytes) -> ApiError:
    """The daemon's error answer `raw` (HTTP `status`) as an ApiError; a body that is not the
    daemon's JSON error (a proxy's page, nothing) keeps its text under the code http_error."""
    try:
        error = compact_json.loads(raw)["error"]
        return ApiError(status, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        text = raw.decode(errors="replace").strip() or f"HTTP {status}"
        return ApiError(status, "http_error", text)


# OpenSSL alert reasons a server sends when it refuses the client's certificate.
_REFUSED_CERTIFICATE = {
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "it has expired",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "none was sent",
    "SSLV3_ALERT_BAD_CERTIFICATE": "it is not valid",
    "TLSV1_ALERT_UNKNOWN_CA": "it was not signed by the cluster CA",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "it was revoked",
    "TLSV1_ALERT_DECRYPT_ERROR": "it does not match its key",
}


class TlsClient(Client):
    """Talks to a daemon's TCP address over mutual TLS (``carte -H tcp://HOST:PORT``).

    The server must present a certificate of the cluster CA in ``cert_path()/ca.pem`` for
    HOST; the client presents cert.pem/key.pem when they exist (without them only the open
    cluster routes answer). ``CARTE_INSECURE=1`` speaks plain HTTP instead (a daemon's
    loopback ``--insecure`` listener).
    """

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"{host}:{port}")
        self.host = host
        self.port = port
        self.certs = cert_path()

    def open(self, method: str, path: str, body: bytes | None = None) -> Response:
        import ssl

        try:
            return super().open(method, path, body)
        except ssl.SSLEOFError:
            # TLS 1.3: the server checks our certificate after the handshake and may close
            # while the request is still being sent (before its alert is read)
            raise DaemonUnreachable(self._closed_on_us()) from None
        except ssl.SSLError as error:
            raise DaemonUnreachable(self._tls_failure(error)) from None
        except DaemonUnreachable as error:
            if "without answering" not in str(error):
                raise
            # TLS 1.3: a server that refuses our certificate may just close the connection.
            raise DaemonUnreachable(self._closed_on_us()) from None
        except (ConnectionResetError, BrokenPipeError) as error:
            raise DaemonUnreachable(
                f"carte: tcp://{self.socket_path} closed the connection ({error.strerror}); "
                f"check the certificates in {self.certs}"
            ) from None

    def connect(self) -> Any:
        import socket

        try:
            sock = socket.create_connection((self.host, self.port), timeout=30)
        except OSError as error:
            raise DaemonUnreachable(
                f"carte: no daemon at tcp://{self.socket_path} ({error.strerror or error}); "
                "start it with --listen, or check the address"
            ) from None
        sock.settimeout(None)
        if os.environ.get("CARTE_INSECURE") == "1":
            return sock
        return self._wrap(sock)

    def _wrap(self, sock: Any) -> Any:
        import ssl

        ca = os.path.join(self.certs, "ca.pem")
        cert, key = os.path.join(self.certs, "cert.pem"), os.path.join(self.certs, "key.pem")
        try:
            context = ssl.create_default_context(cafile=ca)
            if os.path.exists(cert) or os.path.exists(key):
                context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as error:
            sock.close()
            reason = getattr(error, "strerror", None) or str(error)
            raise DaemonUnreachable(
                f"carte: cannot load the cluster certificates from {self.certs} ({reason}); "
                "put ca.pem, cert.pem and key.pem there (carte cluster init writes them) "
                "or point CARTE_CERT_PATH at them"
            ) from None
        try:
            return context.wrap_socket(sock, server_hostname=self.host)
        except ssl.SSLError as error:
            sock.close()
            raise DaemonUnreachable(self._tls_failure(error)) from None

    def _tls_failure(self, error: Any) -> str:
        reason = str(getattr(error, "reason", "") or "")
        if reason == "CERTIFICATE_VERIFY_FAILED":
            detail = getattr(error, "verify_message", "") or "not verified"
            return (
                f"carte: tcp://{self.socket_path} is not a daemon of the cluster in "
                f"{self.certs}/ca.pem ({detail}); check -H and CARTE_CERT_PATH"
            )
        refused = _REFUSED_CERTIFICATE.get(reason)
        if refused:
            return (
                f"carte: tcp://{self.socket_path} refused this client's certificate "
                f"({self.certs}/cert.pem): {refused}; get a new one from the cluster's admin"
            )
        return f"carte: TLS with tcp://{self.socket_path} failed: {reason or error}"

    def _closed_on_us(self) -> str:
        import ssl
        import time

        cert = os.path.join(self.certs, "cert.pem")
        reason = "it may be revoked or not of this cluster"
        try:
            decoded = ssl._ssl._test_decode_cert(cert)  # type: ignore[attr-defined]
            not_after = ssl.cert_time_to_seconds(decoded["notAfter"])
            if not_after < time.time():
                reason = f"it has expired ({decoded['notAfter']})"
        except (OSError, ssl.SSLError, KeyError, ValueError, AttributeError):
            pass
        return (
            f"carte: tcp://{self.socket_path} refused this client's certificate ({cert}): "
            f"{reason}; get a new one from the cluster's admin"
        )

    def _unreachable(self, reason: str) -> str:
        return f"carte: no daemon at tcp://{self.socket_path} ({reason})"
