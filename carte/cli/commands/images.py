"""Image commands (minimal): import, images, image inspect/ls/tag/rm, tag, rmi."""

from __future__ import annotations

import argparse
import json
import os
import sys

from carte.cli.commands import Commands, Session, add_template_format, each, templated
from carte.cli.output import docker_image

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    from typing import Any


def register(commands: Commands) -> None:
    commands.add(
        "import", run=import_image, help="import a rootfs tarball as an image", arguments=_import
    )
    commands.add("images", run=list_images, help="list images", arguments=_list)
    commands.add("tag", run=tag, help="give an image another name", arguments=_tag)
    commands.add("rmi", run=remove, help="remove images", arguments=_remove)
    image = commands.group("image", help="manage images")
    image.alias("ls", commands, "images")
    image.add_inspect(
        "InspectImage",
        help="show images in detail",
        metavar="IMAGE",
        example="{{.Config.Cmd}}",
        key="ref",
        shape=docker_image,
    )
    image.alias("tag", commands)
    image.alias("rm", commands, "rmi")
    image.add("import", run=import_image, help="import a rootfs tarball", arguments=_import)


def _import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", help="a tar (plain, gzip or zstd) of a root filesystem, - for stdin"
    )
    parser.add_argument("name", nargs="?", default="", help="NAME[:TAG] for the image")


def _list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="only ids")
    parser.add_argument("-a", "--all", action="store_true", help="all images")
    parser.add_argument("--digests", action="store_true", help="show digests")
    parser.add_argument("-f", "--filter", action="append", default=[], help="reference=..")
    parser.add_argument("--no-trunc", action="store_true", help="full ids")
    add_template_format(parser, "list_format")


_IMAGE_HEADERS = {"ID": "IMAGE ID", "CreatedSince": "CREATED"}


def _refs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE")


def _tag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source")
    parser.add_argument("target")


def _remove(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--force", action="store_true", help="even if containers use it")
    parser.add_argument("images", nargs="+", metavar="IMAGE")


def import_image(session: Session) -> int:
    path = session.args.file
    if path == "-":
        from urllib.parse import urlencode

        query = urlencode({"name": session.args.name})
        response = session.client.open(
            "POST", f"/v1/images/import?{query}", sys.stdin.buffer.read()
        )
        try:
            row = json.loads(response.body())["result"]
        finally:
            response.close()
        session.output.line(row["id"])
        return 0
    if not os.path.isfile(path):
        print(f'carte: cannot import "{path}": no such file; give a tar file', file=sys.stderr)
        return 1
    row = session.command("ImportImage", source=os.path.abspath(path), name=session.args.name)
    session.output.line(row["id"])
    return 0


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.3g}{unit}"
        value /= 1000
    return f"{value:.3g}GB"


def list_images(session: Session) -> int:
    args = session.args
    filters: dict[str, list[str]] = {}
    for value in args.filter:
        key, _, val = value.partition("=")
        filters.setdefault(key, []).append(val)
    rows = session.command("ListImages", all=args.all, filters=filters)
    out = session.output
    if args.list_format == "json" or out.json:
        out.data(rows)
        return 0

    def short(image_id: str) -> str:
        return image_id if args.no_trunc else image_id.removeprefix("sha256:")[:12]

    if args.list_format not in (None, "table"):
        from carte.cli.commands.containers import _ago

        def fields(row: dict[str, Any]) -> dict[str, Any]:
            return {
                "Repository": row["repository"], "Tag": row["tag"], "Digest": row["digest"],
                "ID": short(row["id"]), "CreatedSince": _ago(row["created"]),
                "CreatedAt": row["created"], "Size": _size(row["size"]),
            }  # fmt: skip

        return templated(session, args.list_format, rows, fields, _IMAGE_HEADERS)

    if args.quiet:
        seen: list[str] = []
        for row in rows:
            if short(row["id"]) not in seen:
                seen.append(short(row["id"]))
        for image_id in seen:
            out.line(image_id)
        return 0
    from carte.cli.commands.containers import _ago

    headers = ["REPOSITORY", "TAG", *(["DIGEST"] if args.digests else []), "IMAGE ID"]
    out.table(
        [*headers, "CREATED", "SIZE"],
        [
            [
                row["repository"],
                row["tag"],
                *([row["digest"]] if args.digests else []),
                short(row["id"]),
                _ago(row["created"]),
                _size(row["size"]),
            ]
            for row in rows
        ],
    )
    return 0


def tag(session: Session) -> int:
    session.command("TagImage", source=session.args.source, target=session.args.target)
    return 0


def remove(session: Session) -> int:
    def remove_one(ref: str) -> None:
        for item in session.command("RemoveImage", ref=ref, force=session.args.force):
            if item.get("untagged"):
                session.output.line(f"Untagged: {item['untagged']}")
            if item.get("deleted"):
                session.output.line(f"Deleted: {item['deleted']}")

    return each(session.args.images, remove_one)
