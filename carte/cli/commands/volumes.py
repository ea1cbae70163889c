"""Volume commands: volume create, ls, inspect, rm, prune."""

from __future__ import annotations

import argparse

from carte.cli.commands import Commands, Session, add_template_format, fail, listed, remove_each

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    from typing import Any


def register(commands: Commands) -> None:
    volume = commands.group("volume", help="manage volumes")
    volume.add("create", run=create, help="create a volume", arguments=_create)
    volume.add("ls", run=list_volumes, help="list volumes", arguments=_list)
    volume.add_inspect(
        "InspectVolume", help="show volumes in detail", metavar="VOLUME", example="{{.Mountpoint}}"
    )
    volume.add("rm", run=remove, help="remove volumes", arguments=_remove)
    volume.add("prune", run=prune, help="remove volumes no container uses", arguments=_prune)


def _create(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default="")
    parser.add_argument("-l", "--label", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("-d", "--driver", default="local", help="only local")
    parser.add_argument(
        "-o",
        "--opt",
        action="append",
        default=[],
        help="type=none,o=bind,device=DIR or type=tmpfs,o=size=64m (one KEY=VALUE each)",
    )


def _list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="only names")
    parser.add_argument("-f", "--filter", action="append", default=[], help="dangling=true..")
    add_template_format(parser, "list_format")


def _remove(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--force", action="store_true", help="even if in use")
    parser.add_argument("names", nargs="+", metavar="VOLUME")


def _prune(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--force", action="store_true", help="do not ask (always true)")
    parser.add_argument("-a", "--all", action="store_true", help="named volumes too")


def create(session: Session) -> int:
    args = session.args
    if args.driver != "local":
        return fail(f'volume driver "{args.driver}" is unknown; use local')
    labels = dict(label.partition("=")[::2] for label in args.label)
    options = {}
    for option in args.opt:
        key, equals, value = option.partition("=")
        if not equals or not key:
            return fail(f'--opt "{option}" is not KEY=VALUE; e.g. -o type=tmpfs')
        options[key] = value
    volume = session.command("CreateVolume", name=args.name, labels=labels, options=options)
    session.output.line(volume["name"])
    return 0


def list_volumes(session: Session) -> int:
    filters: dict[str, list[str]] = {}
    for value in session.args.filter:
        key, _, val = value.partition("=")
        filters.setdefault(key, []).append(val)
    volumes = session.command("ListVolumes", filters=filters)
    return listed(
        session,
        session.args.list_format,
        volumes,
        ["DRIVER", "VOLUME NAME"],
        lambda v: [v["driver"], v["name"]],
        fields=_volume_fields,
        headers={"Name": "VOLUME NAME"},
        quiet_key="name" if session.args.quiet else None,
    )


def _volume_fields(volume: dict[str, Any]) -> dict[str, Any]:
    """A volume under Docker's `volume ls --format` names."""
    labels = ",".join(f"{k}={v}" for k, v in (volume.get("labels") or {}).items())
    return {
        "Name": volume["name"], "Driver": volume["driver"], "Scope": "local",
        "Mountpoint": volume.get("mountpoint", ""), "Labels": labels,
    }  # fmt: skip


def remove(session: Session) -> int:
    return remove_each(session, "RemoveVolume", force=session.args.force)


def prune(session: Session) -> int:
    session.output.pruned(session.command("PruneVolumes", all=session.args.all), "Volumes")
    return 0
