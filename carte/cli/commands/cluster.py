"""Cluster commands: cluster init, join-token, status."""

from __future__ import annotations

import argparse
import os

from carte.cli.commands import Commands, Session, fail
from carte.cli.transport import cert_path


def register(commands: Commands) -> None:
    cluster = commands.group("cluster", help="manage the cluster (control plane)")
    cluster.add(
        "init", run=init, help="make this daemon a cluster's control plane", arguments=_init
    )
    cluster.add(
        "join-token", run=join_token, help="create, list or revoke join tokens", arguments=_token
    )
    cluster.add("status", run=status, help="this daemon's place in the cluster")


def _init(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="", metavar="tcp://ADDR:PORT", help="TCP API address")
    parser.add_argument("--advertise", default="", metavar="ADDR", help="address nodes dial")
    parser.add_argument("--name", default="", help="node name (default: the host name)")


def _token(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rotate", action="store_true", help="revoke active tokens first")
    parser.add_argument("--ls", action="store_true", help="list the tokens")
    parser.add_argument("--revoke", default="", metavar="ID", help="revoke a token")
    parser.add_argument("--ttl", type=float, default=0.0, help="seconds it is valid (0: ever)")


def write_credentials(directory: str, credentials: dict[str, str]) -> None:
    """ca.pem, cert.pem and key.pem (0600) in ``directory`` (0700), each replaced whole."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name, field, mode in (
        ("ca.pem", "ca", 0o644),
        ("cert.pem", "cert", 0o644),
        ("key.pem", "key", 0o600),
    ):
        partial = os.path.join(directory, f".{name}.tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as file:
            file.write(credentials[field])
        os.replace(partial, os.path.join(directory, name))


def init(session: Session) -> int:
    args = session.args
    result = session.command(
        "InitCluster", listen=args.listen, advertise=args.advertise, name=args.name
    )
    directory = cert_path()
    try:
        write_credentials(directory, result["admin"])
    except OSError as error:
        return fail(f"cannot write the admin certificates to {directory}: {error.strerror}")
    out = session.output
    port = result["listen"].rpartition(":")[2]
    server = f"tcp://{result['advertise']}:{port}"
    if out.json:
        shown = {k: v for k, v in result.items() if k != "admin"}
        out.data({**shown, "server": server, "certs": directory})
        return 0
    out.line(
        f"Control plane {result['name']} serves {result['listen']} (CA {result['ca_hash'][:16]})"
    )
    out.line(f"Admin certificates: {directory} (carte -H {server} ...)")
    if result["token"]:
        out.line("Join a node with:")
        out.line(f"  carte node join --token {result['token']} --server {server}")
    else:
        out.line("Joined the existing cluster as another control plane.")
    return 0


def join_token(session: Session) -> int:
    args = session.args
    out = session.output
    if args.ls:
        tokens = session.command("ListJoinTokens")
        if out.json:
            out.data(tokens)
        else:
            rows = [[t["id"], t["state"], t["created"], t["expires"] or "never"] for t in tokens]
            out.table(["ID", "STATE", "CREATED", "EXPIRES"], rows)
        return 0
    if args.revoke:
        token = session.command("RevokeJoinToken", id=args.revoke)
        if out.json:
            out.data(token)
        else:
            out.line(f"{token['id']} {token['state']}")
        return 0
    made = session.command("CreateJoinToken", rotate=args.rotate, ttl=args.ttl)
    if out.json:
        out.data(made)
    else:
        out.line(made["token"])
    return 0


def status(session: Session) -> int:
    result = session.command("GetClusterStatus")
    out = session.output
    if out.json:
        out.data(result)
        return 0
    pairs: list[tuple[str, object]] = [("Role", result["role"])]
    if result["role"] != "none":
        pairs.append(("Name", result["name"]))
    if result["server"]:
        pairs.append(("Server", result["server"]))
    if len(result.get("servers", [])) > 1:
        pairs.append(("Control planes", ", ".join(result["servers"])))
    if result["listen"]:
        pairs.append(("Listen", result["listen"]))
    if result["ca_hash"]:
        pairs.append(("CA", result["ca_hash"]))
    if result["role"] == "control":
        pairs.append(
            ("Leader", result["leader"] + (" (this daemon)" if result["is_leader"] else ""))
        )
        pairs.append(
            ("Nodes", f"{result['nodes']} ({result['ready']} ready, {result['down']} down)")
        )
    out.fields(pairs)
    return 0
