"""What build tests look at: the built image's files (read from the daemon's store through
the image library) and the host resources a build must not leave behind."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support.daemon import Daemon

from carte.build._layer_view import LayerView
from carte.image import ImageStore, StoredImage, lowerdirs


def build(
    daemon: Daemon,
    context: Path,
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`carte build ARGS CONTEXT` against the daemon."""
    return subprocess.run(
        _build_command(daemon, context, args),
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
        env={**daemon.env, **(env or {})},
    )


def built(
    daemon: Daemon, context: Path, *args: str, **options: Any
) -> subprocess.CompletedProcess[str]:
    """`build` (same arguments) that must succeed; a failure shows the build's stderr."""
    result = build(daemon, context, *args, **options)
    assert result.returncode == 0, result.stderr
    return result


@contextmanager
def running_build(daemon: Daemon, context: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`carte build ARGS CONTEXT` in the background, given to the block once a step printed a
    line ending in `started`; its stderr pipe is closed after the block."""
    client = subprocess.Popen(
        _build_command(daemon, context, args), stderr=subprocess.PIPE, text=True, env=daemon.env
    )
    assert client.stderr is not None
    try:
        for line in client.stderr:
            if line.endswith("started\n"):
                break
        yield client
    finally:
        client.stderr.close()


def _build_command(daemon: Daemon, context: Path, args: tuple[str, ...]) -> list[str]:
    return [*daemon.command, "--host", f"unix://{daemon.socket}", "build", *args, str(context)]


def write(directory: Path, files: dict[str, str]) -> Path:
    """A build context: `files` (relative path -> text) written below `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


@contextmanager
def serving(directory: Path) -> Iterator[str]:
    """An HTTP server on loopback serving `directory`: its base URL, until the block ends."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def image(daemon: Daemon, name: str) -> StoredImage:
    return ImageStore(daemon.root).get(name)


def read_file(daemon: Daemon, name: str, path: str) -> bytes | None:
    """The content of `path` in image `name`, or None if it has no such file."""
    store = ImageStore(daemon.root)
    view = LayerView(lowerdirs(store, store.get(name)))
    found = view.lookup(view.resolve(path))
    return None if found is None else Path(found[0]).read_bytes()


def stat_file(daemon: Daemon, name: str, path: str) -> os.stat_result | None:
    store = ImageStore(daemon.root)
    view = LayerView(lowerdirs(store, store.get(name)))
    found = view.lookup(view.resolve(path))
    return None if found is None else found[1]


def leftovers(daemon: Daemon) -> list[str]:
    """Scratch dirs, uploads, mounts, runtime state and cgroups a finished build left behind."""
    found: list[str] = []
    for directory in ("build-scratch", "build-contexts"):
        path = daemon.root / directory
        if path.is_dir():
            # kept contexts (session-*) are a cache that `carte builder prune` empties
            found.extend(
                str(child) for child in path.iterdir() if not child.name.startswith("session-")
            )
    volumes = f" {daemon.root / 'volumes'} "  # mounted nosuid,nodev while the daemon runs
    with open("/proc/self/mountinfo") as mounts:
        found.extend(line for line in mounts if str(daemon.workdir) in line and volumes not in line)
    found.extend(str(p) for p in Path("/sys/fs/cgroup").glob("*/carte/build-*"))
    state = daemon.run_root / "build-runtime"
    if state.is_dir():
        found.extend(str(child) for child in state.iterdir())
    return found
