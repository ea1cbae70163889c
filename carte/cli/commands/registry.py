"""Registry commands: pull, push, login, logout.

Logins are kept by the client, as Docker's client keeps them: `$XDG_CONFIG_HOME/carte/auth.json`
(default ~/.config/carte/auth.json, mode 0600, Docker's `{"auths": {HOST: {"auth": b64}}}`).
`carte login` checks the login through the daemon before saving it; pull and push send the
login for the image's registry host with the request. The daemon stores none.

Pull and push progress comes from the daemon as NDJSON and goes to stderr: one bar per layer
on a terminal, a line per layer state change otherwise.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile

from carte.cli.commands import Commands, Session, UsageError
from carte.cli.run_options import RunOptionError, check_platform

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    from typing import Any, TextIO

DEFAULT_REGISTRY = "docker.io"
_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io", "index.docker.io/v1")


def register(commands: Commands) -> None:
    _register_pull_push(commands)
    commands.add("login", run=login, help="log in to a registry", arguments=_login)
    commands.add("logout", run=logout, help="forget a registry login", arguments=_logout)
    _register_pull_push(commands.group("image", help="manage images"))


def _register_pull_push(level: Commands) -> None:
    """`pull` and `push`, at the top and under `image` (Docker has both spellings)."""
    level.add("pull", run=pull, help="pull an image from a registry", arguments=_pull)
    level.add("push", run=push, help="push an image to a registry", arguments=_push)


def _insecure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--insecure-registry",
        action="store_true",
        help="allow plain HTTP to this registry (loopback hosts always may)",
    )


def _pull(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="NAME[:TAG|@DIGEST]")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the image name")
    parser.add_argument("--platform", default="", help="OS/ARCH: only this host's is accepted")
    _insecure(parser)


def _push(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="NAME[:TAG]")
    parser.add_argument("target", nargs="?", default="", help="push as this name instead")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _insecure(parser)


def _login(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("server", nargs="?", default=DEFAULT_REGISTRY, metavar="HOST")
    parser.add_argument("-u", "--username")
    parser.add_argument("-p", "--password", help="prefer --password-stdin")
    parser.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    _insecure(parser)


def _logout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("server", nargs="?", default=DEFAULT_REGISTRY, metavar="HOST")


# -- credentials -----------------------------------------------------------------------------


def auth_path() -> str:
    home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(home, "carte", "auth.json")


def normalize_host(server: str) -> str:
    """`https://reg:5000/` -> `reg:5000`; Docker Hub's aliases -> `docker.io`."""
    host = server.strip()
    for scheme in ("https://", "http://"):
        host = host.removeprefix(scheme)
    host = host.rstrip("/")
    if host in _HUB_ALIASES:
        return DEFAULT_REGISTRY
    if not host or "/" in host:
        raise UsageError(f'registry "{server}" is not a host; give HOST or HOST:PORT')
    return host


def registry_host(reference: str) -> str:
    """The registry host an image reference names (Docker's rule for the first component)."""
    first, slash, _ = reference.split("@", 1)[0].partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return DEFAULT_REGISTRY


def _read_auths() -> dict[str, Any]:
    path = auth_path()
    try:
        with open(path, "rb") as file:
            data = json.load(file)
    except FileNotFoundError:
        return {}
    except ValueError:
        raise UsageError(f"credentials file {path} is not valid JSON; fix or remove it") from None
    auths = data.get("auths") if isinstance(data, dict) else None
    return auths if isinstance(auths, dict) else {}


def _write_auths(auths: dict[str, Any]) -> None:
    path = auth_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".auth-")
    try:
        os.fchmod(fd, 0o600)
        with open(fd, "w") as file:
            json.dump({"auths": auths}, file, indent=2)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def stored_login(host: str) -> dict[str, str] | None:
    """The saved login for `host` as the wire `RegistryLogin`, or None."""
    entry = _read_auths().get(host)
    encoded = entry.get("auth", "") if isinstance(entry, dict) else ""
    if not encoded:
        return None
    try:
        username, _, password = base64.b64decode(encoded).decode().partition(":")
    except ValueError:
        raise UsageError(
            f"the login for {host} in {auth_path()} is damaged; run carte login {host}"
        ) from None
    return {"username": username, "password": password}


# -- progress --------------------------------------------------------------------------------


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.3g}{unit}"
        size /= 1000
    return f"{size:.3g}GB"


_WORDS = {
    "pull": ("Downloading", "Download complete"),
    "extract": ("Extracting", "Pull complete"),
    "push": ("Pushing", "Pushed"),
    "exists": ("Already exists", "Already exists"),
    "mounted": ("Mounted", "Mounted from another repository"),
}


class ProgressView:
    """Renders progress events: redrawn bars on a terminal, state-change lines otherwise."""

    def __init__(self, stream: TextIO, quiet: bool) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self.rows: dict[str, str] = {}
        self.states: dict[str, str] = {}
        self.drawn = 0

    def update(self, event: dict[str, Any]) -> None:
        if self.quiet:
            return
        digest, done, total = event["digest"], event["done"], event["total"]
        busy, finished = _WORDS.get(event["action"], (event["action"], event["action"]))
        complete = done >= total and (event["action"] != "extract" or done > 0)
        short = digest.removeprefix("sha256:")[:12]
        if self.tty:
            width = 30
            filled = int(width * done / total) if total else width
            bar = "" if complete else f" [{'=' * filled}{' ' * (width - filled)}]"
            sizes = "" if complete else f" {human_size(done)}/{human_size(total)}"
            self.rows[digest] = f"{short}: {finished if complete else busy}{bar}{sizes}"
            self._redraw()
        else:
            state = finished if complete else busy
            if self.states.get(digest) != state:
                self.states[digest] = state
                self.stream.write(f"{short}: {state}\n")
                self.stream.flush()

    def _redraw(self) -> None:
        up = f"\x1b[{self.drawn}A" if self.drawn else ""
        lines = "".join(f"\r\x1b[2K{row}\n" for row in self.rows.values())
        self.stream.write(up + lines)
        self.stream.flush()
        self.drawn = len(self.rows)


def stream_transfer(session: Session, path: str, body: dict[str, Any], quiet: bool) -> Any:
    """POST a pull/push, render its progress and return the result; raise on its error."""
    from carte.cli.transport import ApiError

    response = session.client.open("POST", path, json.dumps(body).encode())
    view = ProgressView(sys.stderr, quiet)
    try:
        for line in response.lines():
            message = json.loads(line)
            if "progress" in message:
                view.update(message["progress"])
            elif "error" in message:
                error = message["error"]
                raise ApiError(500, error.get("code", "internal"), error.get("message", ""))
            elif "result" in message:
                return message["result"]
    finally:
        response.close()
    raise ApiError(500, "internal", "the daemon ended the transfer without a result; retry it")


# -- commands --------------------------------------------------------------------------------


def pull(session: Session) -> int:
    args = session.args
    try:
        check_platform(args.platform, "--platform")
    except RunOptionError as error:
        raise UsageError(str(error)) from None
    body = {
        "reference": args.image,
        "login": stored_login(registry_host(args.image)),
        "insecure": args.insecure_registry,
    }
    result = stream_transfer(session, "/v1/images/pull", body, args.quiet)
    out = session.output
    if out.json:
        out.data(result)
        return 0
    if not args.quiet:  # Docker's -q prints the name alone, for `image=$(docker pull -q ...)`
        out.line(f"Digest: {result['manifest_digest']}")
    out.line(result["name"] or args.image)
    return 0


def push(session: Session) -> int:
    args = session.args
    target = args.target or args.image
    body = {
        "image": args.image,
        "target": args.target,
        "login": stored_login(registry_host(target)),
        "insecure": args.insecure_registry,
    }
    result = stream_transfer(session, "/v1/images/push", body, args.quiet)
    out = session.output
    if out.json:
        out.data(result)
    else:
        out.line(f"{result['reference']}: digest: {result['manifest_digest']}")
    return 0


def login(session: Session) -> int:
    import getpass

    args = session.args
    host = normalize_host(args.server)
    username = args.username
    if args.password_stdin:
        if args.password:
            raise UsageError("give --password or --password-stdin, not both")
        password = sys.stdin.read().rstrip("\r\n")
    else:
        password = args.password
    if not username:
        if not sys.stdin.isatty():
            raise UsageError("give the user name with -u when stdin is not a terminal")
        username = input("Username: ").strip()
    if password is None:
        password = getpass.getpass("Password: ")
    if not username or not password:
        raise UsageError("a login needs a user name and a password")
    credentials = {"username": username, "password": password}
    session.client.post_json(
        "/v1/commands/CheckRegistryLogin",
        {"host": host, "login": credentials, "insecure": args.insecure_registry},
    )["result"]
    auths = _read_auths()
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    auths[host] = {"auth": token}
    _write_auths(auths)
    session.output.line(f"Login Succeeded ({host}; saved in {auth_path()})")
    return 0


def logout(session: Session) -> int:
    host = normalize_host(session.args.server)
    auths = _read_auths()
    if host not in auths:
        print(f"carte: not logged in to {host}", file=sys.stderr)
        return 0
    del auths[host]
    _write_auths(auths)
    session.output.line(f"Removing login credentials for {host}")
    return 0
