"""`carte compose VERB`: the verbs `docker compose` users type, on the stack machinery.

A Compose project is a stack: `up` is `carte apply`, `down` is `carte stack rm`, and the
container verbs act on the stack's replicas. The file is `-f FILE`, else the first of
compose.yaml, compose.yml, docker-compose.yaml, docker-compose.yml found in the current
directory or the nearest parent that has one (as Compose looks). The project name is `-p`,
else $COMPOSE_PROJECT_NAME, else the file's top-level `name:`, else the file's directory
(lowercased, other characters than letters, digits, "_" and "-" dropped).

Differences from Compose, by design of the stack machinery: `up SERVICE...` checks the names
but deploys the whole file; images named by the file are pulled when missing (`--pull never`
refuses instead); replicas a user stopped are kept stopped until `start`, `up` (or `carte
apply`) starts them; after a daemon restart they are replaced if their restart policy would
restart them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from carte.cli.commands import Commands, Session, UsageError, add_log_window, fail, warn
from carte.cli.transport import ApiError

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    from typing import Any

_OVERRIDES = ("compose.override.yaml", "compose.override.yml", "docker-compose.override.yml")
COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
_MISSING_IMAGE = re.compile(r'image "([^"]+)" not found locally')
_TOP_NAME = re.compile(r"""^name:[ \t]*["']?([^"'\s#]+)""", re.MULTILINE)


def register(commands: Commands) -> None:
    commands.add(
        "compose", run=_dispatch, help="Docker Compose's verbs on a stack", arguments=_compose
    )


def _compose(parser: argparse.ArgumentParser) -> None:
    """Compose's own options, then one subparser per verb (`carte compose -f F up -d`)."""
    parser.add_argument(
        "-f", "--file", action="append", default=[], help="Compose file (default: found)"
    )
    parser.add_argument(
        "-p",
        "--project-name",
        default="",
        help="project name (default: $COMPOSE_PROJECT_NAME, the file's name:, its directory)",
    )
    parser.add_argument(
        "--profile", action="append", default=[], dest="profiles", help="enable a profile"
    )
    parser.add_argument(
        "--env-file", default="", help="variables for the file (the shell's still win)"
    )
    verbs: Any = parser.add_subparsers(title="verbs", metavar="VERB")
    for name, run, text, arguments in _verbs():
        child = verbs.add_parser(
            name,
            help=text,
            description=text,
            formatter_class=parser.formatter_class,
            allow_abbrev=False,
        )
        child.set_defaults(verb=run)
        arguments(child)


def _dispatch(session: Session) -> int:
    verb = getattr(session.args, "verb", None)
    if verb is None:
        raise UsageError("name a verb: carte compose up|down|ps|logs|... (see --help)")
    return int(verb(session))


def _verbs() -> tuple[tuple[str, Any, str, Any], ...]:
    return (
        ("up", up, "create and start the project's services", _up),
        ("down", down, "stop and remove the project (-v its volumes)", _down),
        ("ps", ps, "list the project's containers", _ps),
        ("logs", logs, "show the services' logs, interleaved by time", _logs),
        ("exec", exec_in, "run a command in a service's running container", _exec),
        ("run", run_once, "run a one-off command with a service's image", _run),
        ("build", build, "build the services' images", _services),
        ("pull", pull, "pull the services' images", _services),
        ("push", push, "push the services' built images", _services),
        ("config", config, "check the file and print it normalized (YAML)", _config),
        ("restart", restart, "restart the services' containers", _services),
        ("stop", stop, "stop the services' containers (kept, as stopped)", _stop),
        ("start", start, "start the services' stopped containers", _services),
        ("top", top, "show the processes of the services' containers", _services),
        ("images", images, "list the images the containers use", _services),
        ("port", port, "print the public port of a service's port", _port),
        ("events", events, "stream the project's events", _events),
        ("kill", kill, "send a signal to the services' containers", _kill),
        ("pause", pause, "pause the services' containers", _services),
        ("unpause", unpause, "unpause the services' containers", _services),
        ("ls", list_projects, "list the projects deployed (every stack)", _ls),
        ("version", version, "print the version", _no_arguments),
    )


# --- arguments ------------------------------------------------------------------------------


def _services(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("services", nargs="*", metavar="SERVICE")


def _stop(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-t", "--timeout", type=int, default=None, help="seconds before SIGKILL")
    _services(parser)


def _up(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--detach", action="store_true", help="do not follow the logs")
    parser.add_argument("--build", action="store_true", help="build images before starting")
    parser.add_argument(
        "--pull", choices=("always", "missing", "never"), default="missing", help="pull images"
    )
    parser.add_argument(
        "--wait", action="store_true", help="wait until running or healthy (implies -d)"
    )
    parser.add_argument(
        "--abort-on-container-exit",
        action="store_true",
        help="stop every container when one exits (attached)",
    )
    parser.add_argument(
        "--exit-code-from", default="", metavar="SERVICE", help="its exit code (implies abort)"
    )
    parser.add_argument("--quiet-pull", action="store_true", help="pull without progress")
    parser.add_argument("--remove-orphans", action="store_true", help="(always done)")
    parser.add_argument("--timestamps", action="store_true", help="show timestamps (attached)")
    parser.add_argument("--no-color", action="store_true", help="no colours (attached)")
    parser.add_argument("--no-log-prefix", action="store_true", help="no prefix (attached)")
    parser.add_argument(
        "--wait-timeout", type=float, default=0, help="seconds --wait waits (default: no limit)"
    )
    _services(parser)


def _down(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--volumes", action="store_true", help="remove named volumes")
    parser.add_argument("--rmi", choices=("all", "local"), help="remove images too")
    parser.add_argument("--remove-orphans", action="store_true", help="(always done)")


def _ps(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="only container ids")
    parser.add_argument("-a", "--all", action="store_true", help="stopped containers too")
    parser.add_argument("--format", dest="ps_format", default="", help="table or json")
    parser.add_argument(
        "--services", dest="names_only", action="store_true", help="only the services' names"
    )
    _services(parser)


def _logs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--follow", action="store_true", help="follow the output")
    parser.add_argument("-n", "--tail", default="all", help="lines from the end of each log")
    add_log_window(parser)
    parser.add_argument("--no-color", action="store_true", help="no colours")
    parser.add_argument("--no-log-prefix", action="store_true", help="no replica prefix")
    _services(parser)


def _exec(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--detach", action="store_true", help="run in the background")
    parser.add_argument("-T", "--no-TTY", dest="no_tty", action="store_true", help="no terminal")
    parser.add_argument("--index", type=int, default=0, help="which replica (default: first)")
    parser.add_argument("-u", "--user", default="", help="user[:group]")
    parser.add_argument("-w", "--workdir", default="", help="working directory")
    parser.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("service", metavar="SERVICE")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND")


def _run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rm", action="store_true", help="remove the container when it exits")
    parser.add_argument("-d", "--detach", action="store_true", help="run in the background")
    parser.add_argument("-T", "--no-TTY", dest="no_tty", action="store_true", help="no terminal")
    parser.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--name", default="", help="the container's name")
    parser.add_argument("--entrypoint", default=None, help="override the entrypoint")
    parser.add_argument("-v", "--volume", action="append", default=[], help="SRC:DST[:ro]")
    parser.add_argument("-p", "--publish", action="append", default=[], help="publish a port")
    parser.add_argument("-l", "--label", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--service-ports", action="store_true", help="the service's ports too")
    parser.add_argument("-i", "--interactive", action="store_true", help="(always, unless -d)")
    parser.add_argument("--no-deps", action="store_true", help="(run never starts others)")
    parser.add_argument("-u", "--user", default="", help="user[:group]")
    parser.add_argument("-w", "--workdir", default="", help="working directory")
    parser.add_argument("service", metavar="SERVICE")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND")


def _config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="only check the file")
    parser.add_argument("--services", action="store_true", help="print the service names")
    parser.add_argument("--volumes", action="store_true", help="print the volume names")
    parser.add_argument("--images", action="store_true", help="print the services' images")
    parser.add_argument(
        "--format", dest="config_format", choices=("yaml", "json"), default="yaml", help="yaml"
    )


def _port(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", default="tcp", choices=("tcp", "udp"))
    parser.add_argument("--index", type=int, default=0, help="(every replica shares the port)")
    parser.add_argument("service", metavar="SERVICE")
    parser.add_argument("private_port", metavar="PRIVATE_PORT", type=int)


def _kill(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-s", "--signal", default="KILL", help="signal to send (default KILL)")
    _services(parser)


def _ls(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="only the names")
    parser.add_argument("-a", "--all", action="store_true", help="(every project is listed)")
    parser.add_argument("--format", dest="ls_format", default="", help="table or json")


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _events(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    _services(parser)


# --- the project ----------------------------------------------------------------------------


class Project:
    """The Compose file (path and text) and the stack name it deploys as."""

    def __init__(self, path: str, text: str, name: str) -> None:
        self.path = path
        self.text = text
        self.name = name

    @property
    def directory(self) -> str:
        return os.path.dirname(self.path)


def find_file(start: str) -> str | None:
    """The Compose file Compose would pick in `start` or its nearest parent that has one."""
    directory = os.path.abspath(start)
    while True:
        for name in COMPOSE_FILES:
            candidate = os.path.join(directory, name)
            if os.path.isfile(candidate):
                return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def directory_name(directory: str) -> str:
    """Compose's project name from a directory: lowercased, other characters dropped."""
    base = os.path.basename(os.path.normpath(directory)).lower()
    return "".join(c for c in base if c.isalnum() or c in "_-").lstrip("_-") or "default"


def project(session: Session) -> Project:
    """The invoked project; UsageError-free: a missing file raises _NoFile (exit 1)."""
    args = session.args
    files = args.file or [f for f in os.environ.get("COMPOSE_FILE", "").split(os.pathsep) if f]
    if len(files) > 1:
        raise _NoFile(
            f"{' + '.join(files)}: several Compose files are not merged (yet); "
            "put the overrides in one file and pass it with -f"
        )
    given = files[0] if files else ""
    if given:
        path = os.path.abspath(given)
    else:
        found = find_file(os.getcwd())
        if found is None:
            raise _NoFile(
                "no configuration file provided: not found (looked for "
                f"{', '.join(COMPOSE_FILES)} in {os.getcwd()} and its parents); pass one with -f"
            )
        path = found
        for name in _OVERRIDES:
            if os.path.isfile(os.path.join(os.path.dirname(found), name)):
                print(
                    f"WARNING: {name} is not merged into {os.path.basename(found)} (Carte reads "
                    "one Compose file); put its overrides in that file",
                    file=sys.stderr,
                )
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        raise _NoFile(f"{given}: the Compose file is missing ({path}); check the path") from None
    except OSError as error:
        raise _NoFile(f"{given or path}: {error.strerror}") from None
    name = args.project_name or os.environ.get("COMPOSE_PROJECT_NAME", "")
    if not name:
        declared = _TOP_NAME.search(text)
        name = declared.group(1) if declared else directory_name(os.path.dirname(path))
    return Project(path, text, name)


class _NoFile(Exception):
    """The Compose file cannot be found or read (exit 1, as `docker compose`)."""


def _environment(session: Session) -> dict[str, str]:
    """The variables the file is read with: the shell's over `--env-file`'s (the daemon adds
    the project directory's .env under both)."""
    path = session.args.env_file
    if not path:
        return dict(os.environ)
    from carte.stack.interpolate import parse_dotenv

    try:
        with open(path, encoding="utf-8") as file:
            return {**parse_dotenv(file.read()), **os.environ}
    except OSError as error:
        raise _NoFile(f"--env-file {path}: {error.strerror}; check the path") from None


def _apply(session: Session, found: Project, *, dry_run: bool = False) -> Any:
    return session.command(
        "ApplyStack",
        name=found.name,
        manifest=found.text,
        file_name=os.path.basename(found.path),
        project_dir=found.directory,
        env=_environment(session),
        dry_run=dry_run,
        profiles=list(session.args.profiles),
    )


def _deployed(session: Session, name: str) -> bool:
    return any(s["name"] == name for s in session.command("ListStacks"))


def _specs(session: Session, stack: str) -> dict[str, dict[str, Any]]:
    """Each deployed service's stored spec (the parsed Compose entry), by service name."""
    return {
        s["name"]: session.command("InspectService", stack=stack, service=s["name"])["spec"]
        for s in session.command("ListServices", stack=stack)
    }


def _replicas(session: Session, stack: str, services: list[str]) -> list[dict[str, Any]]:
    """The stack's replicas, of `services` when any are named (an unknown name: UsageError)."""
    rows: list[dict[str, Any]] = session.command("ListReplicas", stack=stack)
    if services:
        known = {s["name"] for s in session.command("ListServices", stack=stack)}
        unknown = [name for name in services if name not in known]
        if unknown:
            raise _NoService(unknown[0])
        rows = [r for r in rows if r["service"] in services]
    return sorted(rows, key=lambda r: (r["service"], r["replica"]))


class _NoService(Exception):
    """A SERVICE argument the project does not have (exit 1: `no such service: NAME`)."""


def _run_verb(verb: Any) -> Any:
    """`verb(session, project)` with Compose's exits for a missing file or service."""

    def run(session: Session) -> int:
        try:
            return int(verb(session, project(session)))
        except _NoFile as error:
            return fail(str(error))
        except _NoService as error:
            return fail(f"no such service: {error}")

    run.__doc__ = verb.__doc__
    return run


def _delegate(session: Session, argv: list[str]) -> int:
    """Run another client command (`exec`, `run`, `build`...) as if typed, on this session's
    daemon; its exit code."""
    from carte.cli.parser import build_parser

    full = ["--format", session.args.format, *argv]
    if session.args.host:
        full = ["--host", session.args.host, *full]
    args = build_parser(full).parse_args(full)
    return int(args.run(Session(args, session.output)))


# --- up / down ------------------------------------------------------------------------------


@_run_verb
def up(session: Session, found: Project) -> int:
    args = session.args
    if args.pull == "always" and _deployed(session, found.name):
        for image in sorted(_images_of(_specs(session, found.name), built=False)):
            if code := _delegate(session, ["pull", "-q", image]):
                return code
    if args.build and _deployed(session, found.name) and (code := build(session)):
        return code
    plan = _apply_pulling(session, found, dry_run=bool(args.services))
    if plan is None:
        return 1
    if args.services:
        named = {a["name"] for a in plan["actions"] if a["kind"] == "service"}
        known = named | {s["name"] for s in _listed_services(session, found.name)}
        for service in args.services:
            if service not in known:
                return fail(f"no such service: {service}")
        plan = _apply_pulling(session, found)
        if plan is None:
            return 1
    warn(plan)
    for action in plan["actions"]:
        what = "Network" if action["kind"] == "network" else "Service"
        verb = {
            "create": "Created",
            "replace": "Recreated",
            "scale": "Scaled",
            "unchanged": "Running",
            "remove": "Removed",
        }.get(action["action"], action["action"])
        session.output.line(f" {what} {action['name']}  {verb}")
    if args.wait:
        return _wait_ready(session, found.name, list(args.services), args.wait_timeout)
    _wait_for_replicas(session, found.name)  # started, as Compose's up -d returns
    if args.detach:
        return 0
    session.args.follow, session.args.tail = True, "all"
    exits: list[tuple[dict[str, Any], int]] = []
    code = follow_logs(session, found.name, list(args.services), exits)
    if not (args.abort_on_container_exit or args.exit_code_from):
        return code
    return _abort(session, found, exits)


def _abort(session: Session, found: Project, exits: list[tuple[dict[str, Any], int]]) -> int:
    """`up --abort-on-container-exit` once a container exited (`exits`: the replicas that
    exited, with their codes): stop the others, as Compose; the exit code of --exit-code-from's
    service (stopped here if it was still running), else of the first that exited."""
    session.output.line("Aborting on container exit...")
    session.args.services, session.args.timeout = [], None
    stop(session)
    wanted = session.args.exit_code_from
    codes = [code for row, code in exits if not wanted or row["service"] == wanted]
    if codes or not wanted:
        return codes[0] if codes else 0
    rows = _replicas(session, found.name, [wanted])
    if not rows:
        return 0
    state = session.command("InspectContainer", ref=rows[0]["container_id"])["state"]
    return int(state.get("exit_code") or 0)


def _wait_for_replicas(session: Session, stack: str, seconds: float = 60.0) -> None:
    """Until every service that wants replicas has one started (running, or a one-shot that
    already exited): the stack converges after apply, and `up -d` returns, or `up` attaches
    to all of them, once Compose's would; gives up quietly after `seconds`."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        services = _listed_services(session, stack)
        wanted = {s["name"] for s in services if s["desired"] > 0}
        have = {
            r["service"]
            for r in session.command("ListReplicas", stack=stack)
            if r["status"].startswith(("Up", "running", "Exited"))
        }
        if services and wanted <= have:
            return
        time.sleep(0.2)


def _wait_ready(session: Session, stack: str, services: list[str], seconds: float) -> int:
    """`up --wait`: until every replica of the services (all, or those named) runs, healthy
    when it has a healthcheck, or has exited 0 (a one-shot service); exit 1 at once when one
    exits with another code or turns unhealthy, or after `seconds` (0: no limit)."""
    import time

    deadline = time.monotonic() + seconds if seconds > 0 else None
    while True:
        listed = [
            s for s in _listed_services(session, stack) if not services or s["name"] in services
        ]
        replicas = session.command("ListReplicas", stack=stack)
        waiting = []
        for service in listed:
            mine = [r for r in replicas if r["service"] == service["name"]]
            for replica in mine:
                status = replica["status"]
                if status.startswith("Exited") and not status.startswith("Exited (0)"):
                    return fail(f"service {service['name']}: {replica['name']} {status}")
                if "(unhealthy)" in status:
                    return fail(f"service {service['name']}: {replica['name']} is unhealthy")
            done = [r for r in mine if r["ready"] or r["status"].startswith("Exited (0)")]
            if len(done) < service["desired"]:
                waiting.append(service["name"])
        if listed and not waiting:
            for service in listed:
                session.output.line(f" Service {service['name']}  Ready")
            return 0
        if deadline is not None and time.monotonic() > deadline:
            return fail(f"timed out after {seconds:g} s waiting for: {', '.join(waiting)}")
        time.sleep(0.2)


def _listed_services(session: Session, stack: str) -> list[dict[str, Any]]:
    return list(session.command("ListServices", stack=stack))


def _apply_pulling(session: Session, found: Project, *, dry_run: bool = False) -> Any:
    """ApplyStack, pulling each image the daemon reports missing (unless --pull never) and
    trying again; None after printing why it failed."""
    pulled: set[str] = set()
    while True:
        try:
            return _apply(session, found, dry_run=dry_run)
        except ApiError as error:
            missing = _MISSING_IMAGE.search(error.message)
            never = getattr(session.args, "pull", "missing") == "never"
            if missing is None or never or missing.group(1) in pulled:
                fail(error.message)
                return None
            image = missing.group(1)
            pulled.add(image)
            quiet = ["-q"] if getattr(session.args, "quiet_pull", False) else []
            if _delegate(session, ["pull", *quiet, image]):
                return None


@_run_verb
def down(session: Session, found: Project) -> int:
    args = session.args
    if not _deployed(session, found.name):
        return 0  # as Compose: nothing to remove is not an error
    specs = _specs(session, found.name)
    for row in session.command("ListReplicas", stack=found.name):
        session.output.line(f" Container {row['name']}  Removed")
    session.command("RemoveStack", name=found.name)
    session.output.line(f" Stack {found.name}  Removed")
    code = 0
    if args.volumes:
        volumes = _volumes_of(found.name, specs)
        code |= _remove_present(session, "RemoveVolume", "name", "Volume", volumes)
    if args.rmi:
        images = _images_of(specs, built=args.rmi == "local", stack=found.name)
        code |= _remove_present(session, "RemoveImage", "ref", "Image", images)
    return code


def _remove_present(session: Session, command: str, key: str, kind: str, names: set[str]) -> int:
    """Remove each of `names` (sorted) with the bus command `command` taking it as `key`,
    printing ` Kind NAME  Removed`; one already gone is no error. Exit code 1 if any failed."""
    code = 0
    for name in sorted(names):
        try:
            session.command(command, **{key: name})
            session.output.line(f" {kind} {name}  Removed")
        except ApiError as error:
            if error.status != 404:
                code = fail(error.message)
    return code


def _volumes_of(stack: str, specs: dict[str, dict[str, Any]]) -> set[str]:
    """The daemon's names of the named volumes the services mount (`<stack>_<name>`)."""
    names: set[str] = set()
    for spec in specs.values():
        for item in spec.get("volumes", []):
            if isinstance(item, dict):
                source = str(item.get("source") or "") if item.get("type") == "volume" else ""
            else:
                parts = str(item).split(":")
                source = parts[0] if len(parts) > 1 else ""
            if source and not source.startswith((".", "/", "~")):
                names.add(f"{stack}_{source}")
    return names


def _images_of(specs: dict[str, dict[str, Any]], *, built: bool, stack: str = "") -> set[str]:
    """The images the services run: with `built`, only those the file builds (`build:`
    without `image:` names `<stack>_<service>`); else those it names with `image:`."""
    images: set[str] = set()
    for name, spec in specs.items():
        image = str(spec.get("image") or "")
        if built:
            if spec.get("build") is not None:
                images.add(image or f"{stack}_{name}")
        elif image and spec.get("build") is None:
            images.add(image)
    return images


# --- listing --------------------------------------------------------------------------------


def list_projects(session: Session) -> int:
    """`compose ls`: every stack as Compose lists projects (NAME, STATUS, CONFIG FILES)."""
    stacks = session.command("ListStacks")
    if session.args.quiet:
        for stack in stacks:
            session.output.line(stack["name"])
        return 0
    rows = []
    for stack in stacks:
        states: dict[str, int] = {}
        for replica in session.command("ListReplicas", stack=stack["name"]):
            state = replica["status"].split(" ", 1)[0].lower().replace("up", "running")
            states[state] = states.get(state, 0) + 1
        status = ", ".join(f"{state}({count})" for state, count in sorted(states.items()))
        rows.append({"Name": stack["name"], "Status": status, "ConfigFiles": stack["file_name"]})
    if session.output.json or session.args.ls_format == "json":
        session.output.data(rows)
    else:
        session.output.table(
            ["NAME", "STATUS", "CONFIG FILES"], [list(row.values()) for row in rows]
        )
    return 0


def version(session: Session) -> int:
    from carte import __version__

    session.output.line(f"Carte compose version {__version__}")
    return 0


@_run_verb
def ps(session: Session, found: Project) -> int:
    args = session.args
    rows = _replicas(session, found.name, args.services) if _deployed(session, found.name) else []
    rows = [r for r in rows if args.all or not r["status"].startswith("Exited")]
    services = {s["name"]: s for s in session.command("ListServices", stack=found.name)}
    if args.names_only:
        for name in sorted({r["service"] for r in rows}):
            session.output.line(name)
        return 0
    if args.quiet:
        for row in rows:
            session.output.line(row["container_id"])
        return 0
    if session.output.json or args.ps_format == "json":
        session.output.data(rows)
        return 0
    if args.ps_format not in ("", "table"):
        raise UsageError(f'--format "{args.ps_format}": use table or json')

    def ports(service: str) -> str:
        listed = services.get(service, {}).get("ports", [])
        return ", ".join(
            f"{p['host_ip'] or '0.0.0.0'}:{p['host_port']}->{p['container_port']}/{p['protocol']}"
            for p in listed
        )

    session.output.table(
        ["NAME", "IMAGE", "SERVICE", "STATUS", "PORTS"],
        [[r["name"], r["image"], r["service"], r["status"], ports(r["service"])] for r in rows],
    )
    return 0


@_run_verb
def images(session: Session, found: Project) -> int:
    rows = _replicas(session, found.name, session.args.services)
    listed: list[list[str]] = []
    for row in rows:
        repository, _, tag = row["image"].rpartition(":")
        if not repository or "/" in tag:
            repository, tag = row["image"], "latest"
        try:
            details = session.command("InspectImage", ref=row["image"])
            ident = str(details.get("id", "")).removeprefix("sha256:")[:12]
        except ApiError:
            ident = ""
        listed.append([row["name"], repository, tag, ident])
    if session.output.json:
        session.output.data(
            [dict(zip(("container", "repository", "tag", "id"), r, strict=True)) for r in listed]
        )
    else:
        session.output.table(["CONTAINER", "REPOSITORY", "TAG", "IMAGE ID"], listed)
    return 0


@_run_verb
def port(session: Session, found: Project) -> int:
    args = session.args
    for service in session.command("ListServices", stack=found.name):
        if service["name"] != args.service:
            continue
        for p in service["ports"]:
            if p["container_port"] == args.private_port and p["protocol"] == args.protocol:
                session.output.line(f"{p['host_ip'] or '0.0.0.0'}:{p['host_port']}")
                return 0
        return fail(f"no port {args.private_port}/{args.protocol} for service {args.service}")
    raise _NoService(args.service)


@_run_verb
def config(session: Session, found: Project) -> int:
    """The normalized Compose file, as `docker compose config` prints it (read here: no daemon
    needed): every problem of the file, each with file:line, and exit 1 when it has any."""
    from carte.stack import ManifestError, compose_config, parse_dotenv

    args = session.args
    env = _environment(session)
    try:
        if not args.env_file:  # --env-file stands for the project's .env, as in Compose
            with open(os.path.join(found.directory, ".env"), encoding="utf-8") as file:
                env = {**parse_dotenv(file.read()), **env}
    except FileNotFoundError:
        pass
    except OSError as error:
        return fail(f"{found.directory}/.env cannot be read: {error.strerror}")
    try:
        normalized = compose_config(
            found.text,
            os.path.basename(found.path),
            env,
            project_dir=found.directory,
            name=found.name,
            profiles=list(args.profiles),
        )
    except ManifestError as error:
        return fail(str(error))
    if args.quiet:
        return 0
    listing = {"services": "services", "volumes": "volumes", "images": "services"}
    for flag, section in listing.items():
        if getattr(args, flag):
            for key, body in normalized.get(section, {}).items():
                line = str(body.get("image") or f"{found.name}_{key}") if flag == "images" else key
                session.output.line(line)
            return 0
    if session.output.json or args.config_format == "json":
        session.output.line(json.dumps(normalized, indent=2))
    else:
        from ruamel.yaml import YAML

        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
        yaml.dump(normalized, session.output.stream)
    return 0


# --- container verbs ------------------------------------------------------------------------


def _replica(session: Session, found: Project, service: str, index: int) -> dict[str, Any]:
    rows = _replicas(session, found.name, [service])
    if index:
        rows = [r for r in rows if r["replica"] == index]
    running = [r for r in rows if r["status"].startswith(("running", "Up"))] or rows
    if not running:
        raise _NoService(f"{service} (no container is running; see carte compose ps)")
    return running[0]


@_run_verb
def exec_in(session: Session, found: Project) -> int:
    args = session.args
    if not args.cmd:
        raise UsageError("exec needs a SERVICE and a COMMAND")
    row = _replica(session, found, args.service, args.index)
    argv = ["exec"]
    if args.detach:
        argv.append("-d")
    else:
        argv.append("-i")
        if not args.no_tty and sys.stdin.isatty():
            argv.append("-t")
    argv += [f"--user={args.user}"] if args.user else []
    argv += [f"--workdir={args.workdir}"] if args.workdir else []
    argv += [f"--env={e}" for e in args.env]
    return _delegate(session, [*argv, row["container_id"], *args.cmd])


@_run_verb
def run_once(session: Session, found: Project) -> int:
    """A one-off container from the service's image and environment, on its networks."""
    args = session.args
    specs = _specs(session, found.name) if _deployed(session, found.name) else {}
    spec = specs.get(args.service)
    if spec is None:
        raise _NoService(args.service)
    image = str(spec.get("image") or f"{found.name}_{args.service}")
    argv = ["run", "--label", f"com.carte.stack={found.name}"]
    argv += ["--rm"] if args.rm else []
    argv += ["-d"] if args.detach else ["-i"]
    if not args.detach and not args.no_tty and sys.stdin.isatty():
        argv.append("-t")
    networks = spec.get("networks") or ["default"]
    first = next(iter(networks))
    argv += [f"--network={found.name}_{first}", f"--network-alias={args.service}"]
    environment = spec.get("environment") or {}
    if isinstance(environment, dict):
        pairs = [f"{k}={'' if v is None else v}" for k, v in environment.items()]
    else:
        pairs = [str(e) for e in environment]
    argv += [f"--env={pair}" for pair in [*pairs, *args.env]]
    argv += [f"--name={args.name}"] if args.name else []
    argv += [f"--user={args.user or spec.get('user')}"] if args.user or spec.get("user") else []
    workdir = args.workdir or spec.get("working_dir")
    argv += [f"--workdir={workdir}"] if workdir else []
    if args.entrypoint is not None:
        argv.append(f"--entrypoint={args.entrypoint}")
    published = [*args.publish, *(_port_texts(spec) if args.service_ports else [])]
    argv += [f"--volume={v}" for v in args.volume] + [f"--publish={p}" for p in published]
    argv += [f"--label={label}" for label in args.label]
    command = list(args.cmd) or _words(spec.get("command"))
    return _delegate(session, [*argv, image, *command])


def _port_texts(spec: dict[str, Any]) -> list[str]:
    """A service's `ports` as `-p` values (the long form written short)."""
    texts = []
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            ip, published = port.get("host_ip") or "", port.get("published") or ""
            host = f"{ip}:{published}:" if ip else (f"{published}:" if published else "")
            port = f"{host}{port['target']}/{port.get('protocol', 'tcp')}"
        texts.append(str(port))
    return texts


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        import shlex

        return shlex.split(value)
    return [str(v) for v in value]


@_run_verb
def restart(session: Session, found: Project) -> int:
    return _each_replica(session, found, "RestartContainer", "Restarted")


@_run_verb
def stop(session: Session, found: Project) -> int:
    """Stop the running replicas (they stay, stopped: the stack does not replace them)."""
    timeout = session.args.timeout
    return _each_replica(session, found, "StopContainer", "Stopped", running=True, timeout=timeout)


@_run_verb
def start(session: Session, found: Project) -> int:
    """Start the stopped replicas again (the same containers)."""
    return _each_replica(session, found, "StartContainer", "Started", running=False)


def _on_running(command: str, done: str, *flags: str) -> Any:
    """A verb that runs `command` on each running replica of the SERVICE arguments, with the
    named flags of its own (`signal`) passed on."""

    def verb(session: Session, found: Project) -> int:
        more = {flag: getattr(session.args, flag) for flag in flags}
        return _each_replica(session, found, command, done, running=True, **more)

    return _run_verb(verb)


kill = _on_running("KillContainer", "Killed", "signal")
pause = _on_running("PauseContainer", "Paused")
unpause = _on_running("UnpauseContainer", "Unpaused")


def _each_replica(
    session: Session,
    found: Project,
    command: str,
    done: str,
    running: bool | None = None,
    **more: Any,
) -> int:
    """`command` on each replica of the SERVICE arguments (only the running ones or only the
    stopped ones when `running` says), a line for each; an error is shown and the rest go on."""
    code = 0
    for row in _replicas(session, found.name, session.args.services):
        if running is not None and running == _stopped(row):
            continue
        try:
            session.command(command, ref=row["container_id"], **more)
            session.output.line(f" Container {row['name']}  {done}")
        except ApiError as error:
            code = fail(error.message)
    return code


def _stopped(row: dict[str, Any]) -> bool:
    return str(row["status"]).startswith(("Exited", "Created"))


@_run_verb
def top(session: Session, found: Project) -> int:
    code = 0
    for row in _replicas(session, found.name, session.args.services):
        session.output.line(row["name"])
        code = _delegate(session, ["top", row["container_id"]]) or code
        session.output.line("")
    return code


# --- images ---------------------------------------------------------------------------------


def _deployed_specs(session: Session, found: Project) -> dict[str, dict[str, Any]]:
    """The deployed services' specs (of the SERVICE arguments when given)."""
    specs = _specs(session, found.name) if _deployed(session, found.name) else {}
    wanted = session.args.services
    for name in wanted:
        if name not in specs:
            raise _NoService(name)
    return {n: s for n, s in specs.items() if not wanted or n in wanted}


@_run_verb
def pull(session: Session, found: Project) -> int:
    """The images the file names: of the deployed services, and any the file would need."""
    code = 0
    for image in sorted(_images_of(_deployed_specs(session, found), built=False)):
        code = _delegate(session, ["pull", image]) or code
    session.args.pull = "missing"
    if not session.args.services and _apply_pulling(session, found, dry_run=True) is None:
        return 1
    return code


@_run_verb
def push(session: Session, found: Project) -> int:
    code = 0
    specs = _deployed_specs(session, found)
    for _, spec in sorted(specs.items()):
        if spec.get("build") is not None and spec.get("image"):
            code = _delegate(session, ["push", str(spec["image"])]) or code
    return code


def build(session: Session, found: Project | None = None) -> int:
    """`carte build` for each deployed service that has `build:` (context relative to the
    file's directory), tagged as the image its replicas run."""
    try:
        found = found or project(session)
        specs = _deployed_specs(session, found)
    except _NoFile as error:
        return fail(str(error))
    except _NoService as error:
        return fail(f"no such service: {error}")
    code = 0
    for name, spec in sorted(specs.items()):
        options = spec.get("build")
        if options is None:
            continue
        if isinstance(options, str):
            options = {"context": options}
        context = os.path.join(found.directory, str(options.get("context") or "."))
        argv = ["build", "-t", str(spec.get("image") or f"{found.name}_{name}")]
        if options.get("dockerfile"):
            argv += ["-f", os.path.join(context, str(options["dockerfile"]))]
        if options.get("target"):
            argv += ["--target", str(options["target"])]
        build_args = options.get("args") or {}
        if isinstance(build_args, dict):
            build_args = [f"{k}={v}" for k, v in build_args.items() if v is not None]
        argv += [f"--build-arg={a}" for a in build_args]
        if options.get("dockerfile_inline"):
            return fail(f"service {name}: build.dockerfile_inline is built by carte compose up")
        code = _delegate(session, [*argv, context]) or code
    return code


# --- logs and events ------------------------------------------------------------------------


@_run_verb
def logs(session: Session, found: Project) -> int:
    return follow_logs(session, found.name, session.args.services)


def follow_logs(
    session: Session,
    stack: str,
    services: list[str],
    exits: list[tuple[dict[str, Any], int]] | None = None,
) -> int:
    """Each replica's log prefixed by its name: sorted by time, or as they come with -f, then
    until every replica stopped (session.args: follow, tail, timestamps, and optionally
    no_color, no_log_prefix)."""
    from carte.cli.commands.system import parse_since
    from carte.cli.replica_logs import LogOptions, bad_tail, show_replica_logs

    args = session.args
    if problem := bad_tail(args.tail):
        return fail(problem)
    window = {
        key: repr(parse_since(value))
        for key in ("since", "until")
        if (value := getattr(args, key, None))
    }
    options = LogOptions(
        follow=args.follow,
        tail=args.tail,
        timestamps=args.timestamps,
        prefix=not getattr(args, "no_log_prefix", False),
        colour=not getattr(args, "no_color", False),
        until_all_exit=True,
        window=window,
        stop_on_exit=bool(
            getattr(args, "abort_on_container_exit", False) or getattr(args, "exit_code_from", "")
        ),
    )
    options.exits = exits if exits is not None else options.exits
    rows = _replicas(session, stack, services)  # an unknown SERVICE fails here, before any line
    listings = iter([rows])
    return show_replica_logs(
        session,
        lambda: next(listings, None) or _replicas(session, stack, services),
        lambda row: str(row["name"]),
        options,
    )


@_run_verb
def events(session: Session, found: Project) -> int:
    """The daemon's events about this project (its services, replicas and networks)."""
    from carte.cli.commands.system import _event_line

    wanted = set(session.args.services)
    response = session.client.open("GET", "/v1/events")
    out = session.output
    prefix = f"{found.name}_"
    try:
        for line in response.lines():
            event = json.loads(line)
            if not _about(event, found.name, prefix, wanted):
                continue
            out.line(line.decode() if session.args.json or out.json else _event_line(event))
            out.stream.flush()
    except KeyboardInterrupt:
        return 0
    finally:
        response.close()
    return 0


def _about(event: dict[str, Any], stack: str, prefix: str, wanted: set[str]) -> bool:
    if event.get("stack") == stack:
        return not wanted or event.get("service") in wanted
    labels = event.get("labels") or {}
    if isinstance(labels, dict) and labels.get("com.carte.stack") == stack:
        return not wanted or labels.get("com.carte.service") in wanted
    ident = str(event.get("id", ""))
    names = [str(event.get("name", "")), ident]
    return any(n.startswith(prefix) for n in names) and (
        not wanted or any(n.startswith(f"{prefix}{s}_") for s in wanted for n in names)
    )
