"""`carte build` and `carte builder prune`.

The client packs the build context (minus what .dockerignore excludes) into a tar, adds the
Dockerfile as its own entry, uploads it to POST /v1/build and prints the progress lines the
daemon streams back on stderr, as BuildKit does: redrawn in place on a terminal
(carte/cli/progress.py), plain lines otherwise or with `--progress plain`; `-q` prints only the
image id, on stdout.

.dockerignore follows Docker's rules: one pattern a line, `#` comments, paths relative to the
context root (a leading `/` is ignored), `*` and `?` within one path component, `**` across
any number of components, `!pattern` re-includes; the last pattern that matches a path (or
one of its parent directories) decides. The matcher lives here, in the client, because
importing the `carte.image` package costs the client over half a second.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import re
import sys

from carte.cli.commands import Commands, Session, UsageError
from carte.cli.run_options import RunOptionError, check_platform
from carte.cli.transport import ApiError

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    from typing import Any


def register(commands: Commands) -> None:
    commands.add("build", run=build, help="build an image from a Dockerfile", arguments=_build)
    image = commands.group("image", help="manage images")
    image.alias("build", commands)
    builder = commands.group("builder", help="manage the build cache")
    builder.add("prune", run=prune, help="remove the build cache", arguments=_prune)


def _build(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("context", metavar="CONTEXT", help="a directory, or - for stdin")
    parser.add_argument("-t", "--tag", action="append", default=[], help="NAME[:TAG]")
    parser.add_argument("-f", "--file", help="the Dockerfile (default CONTEXT/Dockerfile)")
    parser.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    parser.add_argument("--target", default="", help="the stage to build")
    parser.add_argument("--no-cache", action="store_true", help="do not use the build cache")
    parser.add_argument("--pull", action="store_true", help="always pull the base images")
    parser.add_argument("--platform", default="", help="OS/ARCH: only this host's (no emulation)")
    parser.add_argument("--iidfile", default="", help="write the image id to this file")
    parser.add_argument("--label", action="append", default=[], metavar="K=V")
    parser.add_argument(
        "--progress",
        choices=("auto", "plain", "quiet"),
        default="auto",
        help="auto: redrawn on a terminal, plain lines otherwise",
    )
    parser.add_argument(
        "--network",
        choices=("none", "host", "default"),
        default="default",
        help="RUN steps' network: default = the NAT'd default bridge with DNS",
    )
    parser.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="id=ID,src=FILE|env=VAR",
        help="a secret for RUN --mount=type=secret (never stored in the image)",
    )
    parser.add_argument(
        "--ssh",
        action="append",
        default=[],
        metavar="ID[=SOCKET]",
        help="an SSH agent socket for RUN --mount=type=ssh (default: $SSH_AUTH_SOCK)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    parser.add_argument(
        "--rm", action="store_true", help="remove the RUN steps' containers (always done)"
    )
    parser.add_argument(
        "--force-rm", action="store_true", help="even after a failed step (always done)"
    )


def _prune(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-a", "--all", action="store_true", help="(the whole cache; default)")
    parser.add_argument("-f", "--force", action="store_true", help="do not ask (never asks)")
    parser.add_argument(
        "--filter", action="append", default=[], help="until=DURATION|TIME (e.g. until=24h)"
    )


def _pairs(values: list[str], flag: str, *, from_env: bool) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, equals, text = value.partition("=")
        if not key:
            raise UsageError(f'{flag} "{value}" is not KEY=VALUE')
        if not equals:
            if not from_env:
                raise UsageError(f'{flag} "{value}" is not KEY=VALUE')
            if key not in os.environ:
                continue  # Docker's rule: a bare name without such variable is skipped
            text = os.environ[key]
        pairs[key] = text
    return pairs


def _dockerfile(context: str | None, file: str | None) -> tuple[str, str]:
    """The Dockerfile's name and text. Raises `UsageError` when it cannot be read."""
    if file == "-" or (context is None and file is None):
        return "Dockerfile", sys.stdin.read()
    path = file if file is not None else os.path.join(context or ".", "Dockerfile")
    try:
        with open(path, encoding="utf-8") as stream:
            return os.path.basename(path), stream.read()
    except OSError as error:
        raise UsageError(
            f"cannot read the Dockerfile {path}: {error.strerror}; give its path with -f"
        ) from None


def _listing(context: str) -> list[list[Any]]:
    """Every path .dockerignore keeps, as the daemon's `ContextEntry` arrays, sorted."""
    import stat

    try:
        with open(os.path.join(context, ".dockerignore"), encoding="utf-8") as ignore:
            rules = IgnoreRules.from_text(ignore.read())
    except FileNotFoundError:
        rules = IgnoreRules([])
    entries: list[list[Any]] = []
    try:
        for relative in rules.walk(context):
            path = os.path.join(context, relative)
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            head = [relative]
            tail = [mode, st.st_uid, st.st_gid]
            if stat.S_ISREG(st.st_mode):
                entries.append([*head, "f", *tail, st.st_size, st.st_mtime_ns, ""])
            elif stat.S_ISDIR(st.st_mode):
                entries.append([*head, "d", *tail, 0, st.st_mtime_ns, ""])
            elif stat.S_ISLNK(st.st_mode):
                entries.append([*head, "l", *tail, 0, st.st_mtime_ns, os.readlink(path)])
            # sockets, fifos and devices are not part of a build context
    except OSError as error:
        raise UsageError(
            f"cannot read the build context {context}: {error}; check its permissions"
        ) from None
    return entries


def _secrets(values: list[str]) -> dict[str, str]:
    """`--secret id=X,src=FILE|env=VAR` values read here, as base64 for the upload header.

    As Docker: `src` defaults to the environment variable named by the id when one exists,
    `type=file|env` picks how a bare `src` is read."""
    import base64

    secrets: dict[str, str] = {}
    for value in values:
        fields: dict[str, str] = {}
        for item in value.split(","):
            key, equals, text = item.partition("=")
            if not equals:
                raise UsageError(f'--secret "{value}": "{item}" is not KEY=VALUE')
            fields[key.strip().lower()] = text
        unknown = sorted(set(fields) - {"id", "src", "source", "env", "type", "required"})
        if unknown:
            raise UsageError(
                f'--secret "{value}": unknown key "{unknown[0]}"; '
                "use id=ID,src=FILE or id=ID,env=VAR"
            )
        identifier = fields.get("id", "")
        source = fields.get("src", fields.get("source", ""))
        env = fields.get("env", "")
        if fields.get("type") == "env" and source and not env:
            env, source = source, ""
        if not identifier:
            identifier = os.path.basename(source) if source else env
        if not identifier:
            raise UsageError(f'--secret "{value}" needs id=ID and src=FILE or env=VAR')
        if not source and not env:
            env = identifier if identifier in os.environ else ""
            if not env:
                raise UsageError(f'--secret "{value}" needs src=FILE or env=VAR')
        if env:
            if env not in os.environ:
                raise UsageError(f'--secret "{value}": the environment variable {env} is not set')
            data = os.environ[env].encode()
        else:
            try:
                with open(source, "rb") as stream:
                    data = stream.read()
            except OSError as error:
                raise UsageError(
                    f'--secret "{value}": cannot read {source}: {error.strerror}'
                ) from None
        secrets[identifier] = base64.b64encode(data).decode()
    return secrets


def _agents(values: list[str]) -> dict[str, str]:
    """`--ssh ID[=SOCKET]` values: agent sockets by id (the daemon binds them, so the client
    and the daemon must share the host)."""
    agents: dict[str, str] = {}
    for value in values:
        identifier, equals, path = value.partition("=")
        if not identifier:
            raise UsageError(f'--ssh "{value}" needs an id, e.g. --ssh default')
        if not equals:
            path = os.environ.get("SSH_AUTH_SOCK", "")
            if not path:
                raise UsageError(
                    f"--ssh {identifier}: SSH_AUTH_SOCK is not set; start ssh-agent or give "
                    f"--ssh {identifier}=SOCKET"
                )
        agents[identifier] = os.path.abspath(path)
    return agents


def _upload(
    context: str | None,
    entries: list[list[Any]],
    needed: list[int],
    text: str,
    secrets: dict[str, str] | None = None,
    agents: dict[str, str] | None = None,
) -> bytes:
    """The upload body: a JSON line, then the needed files' bytes in that order."""
    header = {
        "entries": entries,
        "sent": needed,
        "dockerfile": text,
        "secrets": secrets or {},
        "ssh": agents or {},
    }
    parts = [json.dumps(header).encode(), b"\n"]
    for index in needed:
        relative, size = entries[index][0], entries[index][5]
        path = os.path.join(context or ".", relative)
        with open(path, "rb") as data:
            content = data.read(size + 1)
        if len(content) != size:
            raise UsageError(f"{path} changed while the build read it; run the build again")
        parts.append(content)
    return b"".join(parts)


def build(session: Session) -> int:
    args = session.args
    context: str | None = None if args.context == "-" else args.context
    if context is not None and not os.path.isdir(context):
        raise UsageError(f"build context {context} is not a directory; give a directory or -")
    try:
        check_platform(args.platform, "--platform")
    except RunOptionError as error:
        raise UsageError(str(error)) from None
    name, text = _dockerfile(context, args.file)
    build_args = _pairs(args.build_arg, "--build-arg", from_env=True)
    secrets = _secrets(args.secret)
    agents = _agents(args.ssh)
    epoch_text = build_args.get("SOURCE_DATE_EPOCH") or os.environ.get("SOURCE_DATE_EPOCH", "")
    options = {
        "tags": args.tag,
        "dockerfile": name,
        "build_args": build_args,
        "target": args.target,
        "no_cache": args.no_cache,
        "pull": args.pull,
        "labels": _pairs(args.label, "--label", from_env=False),
        "network": args.network,
        "source_date_epoch": int(epoch_text) if epoch_text.isdigit() else None,
        "context_key": ""
        if context is None
        else f"{os.uname().nodename}:{os.path.realpath(context)}",
    }
    from urllib.parse import quote

    entries: list[list[Any]] = []
    needed: list[int] = []
    if context is not None:
        entries = _listing(context)
        key = quote(str(options["context_key"]))
        needed = session.client.post_json(f"/v1/build/context?key={key}", entries)["needed"]
    body = _upload(context, entries, needed, text, secrets, agents)

    path = "/v1/build?options=" + quote(json.dumps(options))
    response = session.client.open("POST", path, body)
    quiet = args.quiet or args.progress == "quiet"
    if not quiet and args.progress == "auto" and sys.stderr.isatty():
        from carte.cli.progress import BuildView

        with BuildView(sys.stderr) as view:
            result = _follow(response, view.feed, view.failed)
    else:
        result = _follow(response, _print_step if not quiet else _ignore, _ignore)
    if args.iidfile:
        with open(args.iidfile, "w", encoding="utf-8") as file:
            file.write(result["id"])
    if quiet:
        print(result["id"])
    else:
        print(f"writing image {result['id']} done", file=sys.stderr)
        for tag in result.get("names", []):
            print(f"naming to {tag} done", file=sys.stderr)
    return 0


def _follow(response: Any, step: Any, failed: Any) -> dict[str, Any]:
    """The build's result, each progress line given to `step` on the way; `failed()` and
    ApiError when the build fails."""
    try:
        for line in response.lines():
            message = json.loads(line)
            if "stream" in message:
                step(message["stream"])
            elif "error" in message:
                failed()
                error = message["error"]
                raise ApiError(400, str(error.get("code")), str(error.get("message")))
            elif "result" in message:
                return dict(message["result"])
    finally:
        response.close()
    raise ApiError(500, "internal", "the daemon ended the build stream without a result")


def _print_step(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _ignore(*_: Any) -> None:
    pass


def prune(session: Session) -> int:
    from carte.cli.commands.system import parse_since

    until = 0.0
    for value in session.args.filter:
        key, _, text = value.partition("=")
        if key != "until" or not text:
            raise UsageError(f'filter "{value}" is not supported; use until=DURATION (24h)')
        until = parse_since(text)
    body = {"until": until} if until else {}
    result = session.client.post_json("/v1/commands/PruneBuildCache", body)["result"]
    session.output.line(f"Deleted build cache records: {result['records']}")
    session.output.line(f"Total reclaimed space: {result['bytes_freed']} B")
    return 0


class IgnoreRules:
    """Compiled .dockerignore patterns."""

    def __init__(self, lines: list[str]) -> None:
        self._rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = line[1:].strip() if include else line
            pattern = posixpath.normpath(pattern).lstrip("/")
            if pattern in (".", ""):
                continue
            self._rules.append((include, re.compile(_regex(pattern))))

    @classmethod
    def from_text(cls, text: str) -> IgnoreRules:
        return cls(text.splitlines())

    @property
    def has_exceptions(self) -> bool:
        return any(include for include, _ in self._rules)

    def excluded(self, path: str) -> bool:
        """Whether the context-relative `path` (with `/` separators) is left out."""
        candidates = _self_and_parents(path)
        result = False
        for include, pattern in self._rules:
            if any(pattern.fullmatch(candidate) for candidate in candidates):
                result = not include
        return result

    def walk(self, root: str) -> list[str]:
        """Context-relative paths under `root` that are not excluded, sorted, dirs included.

        An excluded directory is skipped whole unless some `!` exception might re-include
        something inside it. Raises `OSError` if a directory cannot be read.
        """
        kept: list[str] = []
        exceptions = self.has_exceptions

        def visit(directory: str, prefix: str) -> None:
            with os.scandir(directory) as entries:
                children = sorted(entries, key=lambda entry: entry.name)
            for entry in children:
                relative = prefix + entry.name
                excluded = self.excluded(relative)
                if not excluded:
                    kept.append(relative)
                if entry.is_dir(follow_symlinks=False) and (not excluded or exceptions):
                    visit(entry.path, relative + "/")

        visit(root, "")
        return kept


def _self_and_parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/".join(parts[: end + 1]) for end in range(len(parts))]


def _regex(pattern: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**", index):
            index += 2
            if pattern.startswith("/", index):
                out.append("(?:.*/)?")
                index += 1
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\" and index + 1 < len(pattern):
            index += 1
            out.append(re.escape(pattern[index]))
        elif char == "[":
            end = pattern.find("]", index + 1)
            if end < 0:
                out.append(re.escape(char))
            else:
                body = pattern[index + 1 : end]
                if body.startswith("!") or body.startswith("^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                index = end
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)
