"""Archive and image-store commands: save, load, export, commit, history, image prune,
system df.

`save` and `export` write the daemon's tar stream to `-o FILE` (through a temporary file
renamed at the end, so a failed download leaves no half file) or to stdout when it is not a
terminal. `load` streams the archive file to the daemon without reading it into memory, its
progress on stderr (a bar on a terminal; none otherwise or with -q, as docker load).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import sys
import urllib.parse

from carte.cli.commands import Commands, Session, UsageError, add_template_format, listed
from carte.cli.commands.registry import human_size
from carte.cli.transport import ApiError, send_request

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, BinaryIO


def register(commands: Commands) -> None:
    # save, load and history also under `image`, export and commit under `container`, as Docker
    _register_save_load(commands)
    _register_export_commit(commands)
    commands.add("history", run=history, help="show an image's layers", arguments=_history)
    image = commands.group("image", help="manage images")
    _register_save_load(image)
    image.alias("history", commands)
    image.add("prune", run=prune, help="remove unused images", arguments=_prune)
    _register_export_commit(commands.group("container", help="manage containers"))
    system = commands.group("system", help="inspect the host Carte runs on")
    system.add("df", run=disk_usage, help="show the disk space Carte uses", arguments=_df)


def _df(parser: argparse.ArgumentParser) -> None:
    add_template_format(parser, "df_format")


def _register_save_load(level: Commands) -> None:
    level.add("save", run=save, help="save images to a tar archive", arguments=_save)
    level.add("load", run=load, help="load images from a tar archive", arguments=_load)


def _register_export_commit(level: Commands) -> None:
    level.add("export", run=export, help="a container's filesystem as a tar", arguments=_export)
    level.add("commit", run=commit, help="a container's changes as an image", arguments=_commit)


def _save(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("-o", "--output", help="the archive file (default: stdout)")
    parser.add_argument(
        "--format", dest="archive_format", choices=("oci", "docker"), default="oci",
        help="oci (OCI image layout, default) or docker (docker save's layout)",
    )  # fmt: skip


def _load(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", help="the archive file (default: stdin)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, only image ids")


def _export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("container", metavar="CONTAINER")
    parser.add_argument("-o", "--output", help="the tar file (default: stdout)")


def _commit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("container", metavar="CONTAINER")
    parser.add_argument("reference", nargs="?", default="", metavar="REPOSITORY[:TAG]")
    parser.add_argument("-a", "--author", default="")
    parser.add_argument("-m", "--message", default="")
    parser.add_argument("-c", "--change", action="append", default=[], help='e.g. "CMD [\\"sh\\"]"')
    parser.add_argument(
        "-p", "--pause", default="true", choices=("true", "false"),
        help="pause a running container while committing (default true)",
    )  # fmt: skip


def _history(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("--no-trunc", action="store_true", help="do not shorten")
    parser.add_argument("-q", "--quiet", action="store_true", help="only image ids")
    parser.add_argument("-H", "--human", default="true", choices=("true", "false"))


def _prune(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-a", "--all", action="store_true", help="every unused image")
    parser.add_argument("-f", "--force", action="store_true", help="do not ask (never asks)")


def _download(session: Session, path: str, output: str | None) -> int:
    """Write a tar the daemon streams to `output` (atomically) or stdout."""
    if output is None and sys.stdout.isatty():
        raise UsageError("refusing to write a tar to a terminal; give -o FILE or redirect")
    response = session.client.open("GET", path)
    try:
        if output is None:
            sink = sys.stdout.buffer
            for chunk in response.chunks():
                sink.write(chunk)
            sink.flush()
            return 0
        temp = f"{output}.carte-partial"
        try:
            with open(temp, "wb") as file:
                for chunk in response.chunks():
                    file.write(chunk)
            os.replace(temp, output)
        except OSError as error:
            print(f"carte: cannot write {output}: {error.strerror or error}", file=sys.stderr)
            return 1
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
    finally:
        response.close()
    return 0


def save(session: Session) -> int:
    args = session.args
    query = urllib.parse.urlencode(
        [*(("name", image) for image in args.images), ("format", args.archive_format)]
    )
    return _download(session, f"/v1/images/save?{query}", args.output)


def export(session: Session) -> int:
    ref = urllib.parse.quote(session.args.container, safe="")
    return _download(session, f"/v1/containers/{ref}/export", session.args.output)


def _upload(session: Session, path: str, source: BinaryIO, size: int | None) -> Any:
    """POST a file's bytes without holding them in memory; return the JSON answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(session.client.socket_path)
    except OSError:
        sock.close()
        session.client.open("GET", "/_ping")  # raises DaemonUnreachable with the usual line
        raise
    length = f"Content-Length: {size}\r\n" if size is not None else ""
    chunked = "" if size is not None else "Transfer-Encoding: chunked\r\n"
    head = f"POST {path} HTTP/1.1\r\nHost: carte\r\nConnection: close\r\n{length}{chunked}\r\n"

    def pieces() -> Iterator[bytes]:
        yield head.encode()
        while data := source.read(1 << 20):
            yield data if size is not None else b"%x\r\n%s\r\n" % (len(data), data)
        if size is None:
            yield b"0\r\n\r\n"

    response = send_request(sock, pieces())  # a body over the daemon's limit: its 413
    try:
        raw = response.body()
    finally:
        response.close()
    answer = json.loads(raw) if raw else {}
    if response.status >= 400:
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        raise ApiError(response.status, error.get("code", ""), error.get("message", str(raw)))
    return answer["result"]


def load(session: Session) -> int:
    args = session.args
    if args.input:
        try:
            source: BinaryIO = open(args.input, "rb")
        except OSError as error:
            print(f"carte: cannot read {args.input}: {error.strerror}", file=sys.stderr)
            return 1
        size: int | None = os.fstat(source.fileno()).st_size
    else:
        if sys.stdin.isatty():
            raise UsageError("give the archive with -i FILE or on stdin")
        source, size = sys.stdin.buffer, None
    with source:
        if args.quiet:
            loaded = _upload(session, "/v1/images/load", source, size)
        else:  # a bar on a terminal, a line at each quarter otherwise
            from carte.cli.progress import UploadProgress

            counted = UploadProgress(source, sys.stderr, "Loading", size)
            try:
                loaded = _upload(session, "/v1/images/load", io.BufferedReader(counted), size)
            finally:
                counted.finish()
    out = session.output
    if out.json:
        out.data(loaded)
        return 0
    for image in loaded:
        if args.quiet:
            out.line(image["id"])
        elif image["names"]:
            for name in image["names"]:
                out.line(f"Loaded image: {name}")
        else:
            out.line(f"Loaded image ID: {image['id']}")
    return 0


def commit(session: Session) -> int:
    args = session.args
    result = session.command(
        "CommitContainer",
        container=args.container,
        reference=args.reference,
        author=args.author,
        message=args.message,
        changes=args.change,
        pause=args.pause == "true",
    )
    session.output.line(result["id"])
    return 0


def history(session: Session) -> int:
    from carte.cli.commands.containers import _ago

    args = session.args
    rows = session.command("ShowImageHistory", ref=args.image)
    out = session.output
    if out.json:
        out.data(rows)
        return 0

    def short_id(image_id: str) -> str:
        if not image_id:
            return "<missing>"
        return image_id if args.no_trunc else image_id.removeprefix("sha256:")[:12]

    if args.quiet:
        for row in rows:
            out.line(short_id(row["id"]))
        return 0

    def shown(text: str) -> str:
        return text if args.no_trunc or len(text) <= 45 else text[:44] + "…"

    human = args.human == "true"
    out.table(
        ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        [
            [
                short_id(row["id"]),
                _ago(row["created"]) if human else row["created"],
                shown(row["created_by"]),
                human_size(row["size"]) if human else row["size"],
                row["comment"],
            ]
            for row in rows
        ],
    )
    return 0


def prune(session: Session) -> int:
    result = session.command("PruneImages", all=session.args.all)
    out = session.output
    if out.json:
        out.data(result)
        return 0
    for item in result["deleted"]:
        if item.get("untagged"):
            out.line(f"untagged: {item['untagged']}")
        if item.get("deleted"):
            out.line(f"deleted: {item['deleted']}")
    out.line(f"Total reclaimed space: {human_size(result['bytes_freed'])}")
    return 0


def disk_usage(session: Session) -> int:
    return listed(
        session,
        session.args.df_format,
        session.command("GetDiskUsage"),
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
        lambda row: [
            row["type"],
            row["total"],
            row["active"],
            human_size(row["size"]),
            human_size(row["reclaimable"]),
        ],
        fields=_usage_fields,
        headers={"TotalCount": "TOTAL"},
    )


def _usage_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A `system df` row under Docker's `--format` names."""
    return {
        "Type": row["type"], "TotalCount": row["total"], "Active": row["active"],
        "Size": human_size(row["size"]), "Reclaimable": human_size(row["reclaimable"]),
    }  # fmt: skip
