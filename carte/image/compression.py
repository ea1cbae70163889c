"""Layer compression: read plain, gzip or zstd (sniffed from magic bytes); write gzip or zstd.

Python has no zstd module here and the `zstandard` package is not a dependency, so zstd goes
through the `zstd` binary (Debian's zstd package) over pipes; without it, zstd layers are
refused with a one-line error saying what to install.
"""

from __future__ import annotations

import contextlib
import gzip
import queue
import shutil
import subprocess
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, Literal

from carte.api.errors import Unavailable
from carte.image import oci

Compression = Literal["gzip", "zstd", "none"]

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
_GZIP_WBITS = 16 + zlib.MAX_WBITS
# Docker and containerd compress layers at gzip's default level, not Python's default 9.
_GZIP_LEVEL = 6

MEDIA_TYPES: dict[Compression, str] = {
    "gzip": oci.OCI_LAYER_GZIP,
    "zstd": oci.OCI_LAYER_ZSTD,
    "none": oci.OCI_LAYER,
}


class _Prefixed:
    """A reader that yields already-sniffed bytes before the rest of the source."""

    def __init__(self, head: bytes, source: BinaryIO) -> None:
        self._head = head
        self._source = source

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0:
                data, self._head = self._head + self._source.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._source.read(size)


class _BackgroundGunzip:
    """Inflates gzip (all members) in a worker thread, handing chunks over a bounded queue.

    zlib releases the GIL, so inflating overlaps with the reader's tar parsing, hashing and
    file writes. Corrupt data (bad CRC, truncation) is raised from `read` as `OSError`/`EOFError`.
    `close()` stops the worker even if the reader gave up early.
    """

    def __init__(self, source: _Prefixed) -> None:
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
        self._stop = threading.Event()
        self._buffer = memoryview(b"")
        self._finished = False
        self._worker = threading.Thread(target=self._inflate, args=(source,), daemon=True)
        self._worker.start()

    def _inflate(self, source: _Prefixed) -> None:
        try:
            inflater = zlib.decompressobj(_GZIP_WBITS)
            fed = False
            while not self._stop.is_set() and (pending := source.read(_CHUNK)):
                while pending and not self._stop.is_set():
                    if inflater.eof:  # another gzip member follows
                        inflater, fed = zlib.decompressobj(_GZIP_WBITS), False
                    if not fed and not pending.strip(b"\0"):
                        break  # zero padding after the last member, as tape tools write
                    fed = True
                    self._put(inflater.decompress(pending, _CHUNK))
                    pending = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
            if fed and not inflater.eof and not self._stop.is_set():
                raise EOFError("gzip data ends before its end-of-stream marker")
            self._put(None)
        except zlib.error as exc:
            self._put(OSError(f"corrupt gzip data: {exc}"))
        except BaseException as exc:
            self._put(exc)

    def _put(self, item: bytes | BaseException | None) -> None:
        if item == b"":
            return
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        wanted = size if size >= 0 else 1 << 62
        while wanted > 0:
            if not self._buffer:
                if self._finished:
                    break
                item = self._queue.get()
                if item is None:
                    self._finished = True
                    break
                if isinstance(item, BaseException):
                    self._finished = True
                    raise item
                self._buffer = memoryview(item)
            taken = self._buffer[:wanted]
            self._buffer = self._buffer[len(taken) :]
            parts.append(bytes(taken))
            wanted -= len(taken)
        return b"".join(parts)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._worker.join()


def _zstd_binary() -> str:
    path = shutil.which("zstd")
    if path is None:
        raise Unavailable(
            "this layer is zstd-compressed but the zstd program is missing; "
            "install it (apt-get install zstd)"
        )
    return path


@contextlib.contextmanager
def decompressed(source: BinaryIO) -> Iterator[BinaryIO]:
    """Yield the uncompressed stream of a plain, gzip or zstd `source`.

    Raises `Unavailable` for zstd without the zstd program; corrupt data surfaces as
    `OSError`/`EOFError` from reads (callers turn those into their own one-line errors).
    """
    head = source.read(4)
    prefixed = _Prefixed(head, source)
    stream: BinaryIO = prefixed  # type: ignore[assignment]
    if head.startswith(_GZIP_MAGIC):
        inflating = _BackgroundGunzip(prefixed)
        try:
            yield inflating  # type: ignore[misc]
        finally:
            inflating.close()
    elif head.startswith(_ZSTD_MAGIC):
        with _zstd_pipe(prefixed, [_zstd_binary(), "-q", "-d", "-c"]) as output:
            yield output
    else:
        yield stream


@contextlib.contextmanager
def compressing(target: BinaryIO, kind: Compression) -> Iterator[BinaryIO]:
    """Yield a writer that compresses into `target`; reproducible (gzip mtime 0, no name)."""
    if kind == "none":
        yield target
    elif kind == "gzip":
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=target, mtime=0, compresslevel=_GZIP_LEVEL
        ) as zipped:
            yield zipped  # type: ignore[misc]
    else:
        with _zstd_writer(target) as writer:
            yield writer


@contextlib.contextmanager
def _thread_while_open(work: Callable[[], None]) -> Iterator[None]:
    """Run `work` in a daemon thread for the block; joined after the block's own cleanup."""
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        yield
    finally:
        worker.join()


@contextlib.contextmanager
def _zstd_pipe(source: _Prefixed, argv: list[str]) -> Iterator[BinaryIO]:
    """Run zstd with a thread feeding `source` to it; yield its stdout."""
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    stdin = process.stdin

    def feed() -> None:
        try:
            while data := source.read(_CHUNK):
                stdin.write(data)
        except (BrokenPipeError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    with _thread_while_open(feed):
        try:
            yield process.stdout  # type: ignore[misc]
        finally:
            process.stdout.close()
            process.kill()
            process.wait()


@contextlib.contextmanager
def _zstd_writer(target: BinaryIO) -> Iterator[BinaryIO]:
    """Run `zstd -c` with a thread copying its output to `target`; yield its stdin."""
    process = subprocess.Popen(
        [_zstd_binary(), "-q", "-c", "-3", "--no-progress"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    stdout = process.stdout

    def drain() -> None:
        while data := stdout.read(_CHUNK):
            target.write(data)

    try:
        with _thread_while_open(drain):
            try:
                yield process.stdin  # type: ignore[misc]
            finally:
                process.stdin.close()
    finally:
        stdout.close()
        status = process.wait()
    if status != 0:
        raise OSError(f"zstd exited with status {status} while compressing a layer")
