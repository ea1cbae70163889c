"""`RUN --mount=...` (BuildKit's syntax): parse each flag into a `MountRequest` and turn it
into runtime mounts for one step.

* `type=bind` (the default): a path of the context, an earlier stage or an image, read-only
  unless `rw` (then writes go to a throwaway overlay upper dir and are discarded).
* `type=cache`: a directory under ROOT/build-mounts/cache that persists between builds
  (keyed by `id`, default the target), removed by `carte builder prune`; `sharing=locked`
  lets one step at a time use it.
* `type=tmpfs`: an empty tmpfs (`size=` bytes).
* `type=secret`: a secret given with `carte build --secret id=X,...`, as a read-only file
  (default /run/secrets/ID, mode 0400) or, with `env=NAME`, an environment variable; it is
  never part of a layer, the cache key or the history.
* `type=ssh`: the agent socket given with `carte build --ssh default[=SOCKET]` (a socket on
  the daemon's host, so a local client's agent), bound at `target` (default
  /run/buildkit/ssh_agent.N) with SSH_AUTH_SOCK pointing at it; the socket keeps its owner
  and mode, so a step running as a non-root user may not be able to use it.

Mount points the step needed that the image lacked are removed from its upper dir afterwards
(`forget_mountpoints`), so a mount leaves no trace in the layer.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from pathlib import Path

import msgspec

from carte.build._layer_view import LayerView
from carte.runtime.spec import Mount

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_BOOLEAN = {"": True, "true": True, "1": True, "false": False, "0": False}
_KEYS = {
    "bind": {"target", "source", "from", "rw", "readonly"},
    "cache": {"target", "id", "sharing", "mode", "uid", "gid", "readonly", "from", "source"},
    "tmpfs": {"target", "size"},
    "secret": {"target", "id", "required", "mode", "uid", "gid", "env"},
    "ssh": {"target", "id", "required", "mode", "uid", "gid"},
}
_ALIASES = {"dst": "target", "destination": "target", "src": "source", "ro": "readonly"}


class MountError(ValueError):
    """A `--mount` value that cannot be used; the caller adds the Dockerfile line."""


class MountRequest(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    target: str
    source: str = ""
    from_: str = ""
    readonly: bool = False
    id: str = ""
    sharing: str = "shared"
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    size: int = 0
    required: bool = False
    env: str = ""

    def described(self) -> dict[str, object]:
        """The request as the cache key sees it (a secret's value is never part of it)."""
        described: dict[str, object] = msgspec.to_builtins(self)
        return described


def parse_mount(text: str, workdir: str) -> MountRequest:
    """One `--mount` value (`type=cache,target=/root/.cache`); raises `MountError`."""
    fields: dict[str, str] = {}
    for item in text.split(","):
        key, equals, value = item.strip().partition("=")
        key = _ALIASES.get(key.lower(), key.lower())
        if not key:
            continue
        if key in ("rw", "readwrite"):
            key, value = "rw", value if equals else "true"
        fields[key] = value if equals else ""
    kind = fields.pop("type", "bind")
    if kind not in MOUNT_TYPES:
        raise MountError(f'--mount type "{kind}" is unknown; use one of {", ".join(MOUNT_TYPES)}')
    unknown = sorted(set(fields) - _KEYS[kind])
    if unknown:
        allowed = ", ".join(sorted(_KEYS[kind]))
        raise MountError(f'--mount type={kind} has no option "{unknown[0]}"; it takes {allowed}')
    identifier = fields.get("id", "")
    target = fields.get("target", "")
    if kind == "secret":
        if not identifier and not target:
            raise MountError("--mount=type=secret needs id= (or target=)")
        identifier = identifier or posixpath.basename(target)
        if not target and not fields.get("env"):
            target = "/run/secrets/" + identifier
    elif kind == "ssh":
        identifier = identifier or "default"
    elif not target:
        raise MountError(f"--mount type={kind} needs target=PATH")
    if target:
        target = posixpath.normpath(posixpath.join(workdir or "/", target))
    if kind == "cache":
        if fields.get("from") or fields.get("source"):
            raise MountError("--mount=type=cache with from=/source= is not supported; drop them")
        identifier = identifier or target
        if fields.get("sharing", "shared") not in ("shared", "private", "locked"):
            raise MountError("--mount sharing= must be shared, private or locked")
    return MountRequest(
        type=kind,
        target=target,
        source=fields.get("source", ""),
        from_=fields.get("from", ""),
        readonly=_flag(fields, "readonly") if kind != "bind" else not _flag(fields, "rw"),
        id=identifier,
        sharing=fields.get("sharing", "shared"),
        mode=_number(fields, "mode", 8),
        uid=_number(fields, "uid", 10) or 0,
        gid=_number(fields, "gid", 10) or 0,
        size=_size(fields.get("size", "")),
        required=_flag(fields, "required"),
        env=fields.get("env", ""),
    )


def _flag(fields: dict[str, str], key: str) -> bool:
    if key not in fields:
        return False
    value = fields[key].lower()
    if value not in _BOOLEAN:
        raise MountError(f'--mount {key}="{fields[key]}" is not true or false')
    return _BOOLEAN[value]


def _number(fields: dict[str, str], key: str, base: int) -> int | None:
    if key not in fields:
        return None
    try:
        return int(fields[key], base)
    except ValueError:
        kind = "an octal mode like 0755" if base == 8 else "a number"
        raise MountError(f'--mount {key}="{fields[key]}" is not {kind}') from None


def _size(text: str) -> int:
    if not text:
        return 0
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    lowered = text.lower().rstrip("b")
    factor = units.get(lowered[-1:], 1)
    digits = lowered[:-1] if lowered[-1:] in units else lowered
    if not digits.isdigit():
        raise MountError(f'--mount size="{text}" is not a size like 64m')
    return int(digits) * factor


def cache_dir(root: Path, identifier: str) -> Path:
    """The host directory of cache mount `identifier` (ROOT/build-mounts/cache/<hash>)."""
    return root / "build-mounts" / "cache" / hashlib.sha256(identifier.encode()).hexdigest()[:32]


def bind_mounts(request: MountRequest, view: LayerView, scratch: Path, what: str) -> list[Mount]:
    """The runtime mount of a bind request whose source lies in `view` (context or stage)."""
    source = posixpath.normpath("/" + request.source)
    if source.startswith("/.."):
        raise MountError(f'--mount source "{request.source}" is outside the {what}')
    found = view.lookup(source)
    if found is None:
        raise MountError(f'--mount source "{request.source or "."}" was not found in the {what}')
    host, st = found
    ro = ["ro"] if request.readonly else []
    if not stat.S_ISDIR(st.st_mode):
        if request.readonly:
            return [
                Mount(destination=request.target, type="bind", source=host, options=["rbind", "ro"])
            ]
        copy = scratch / f"bind-{len(list(scratch.iterdir()))}"
        copy.write_bytes(Path(host).read_bytes())
        return [Mount(destination=request.target, type="bind", source=str(copy), options=["rbind"])]
    parts = [p for p in source.split("/") if p]
    lowers = [os.path.join(layer, *parts) for layer in view.layers]
    lowers = [p for p in lowers if os.path.isdir(p)]
    empty = scratch / f"empty-{len(list(scratch.iterdir()))}"
    empty.mkdir()
    options = ["lowerdir=" + ":".join([*lowers, str(empty)])]
    if not request.readonly:
        upper = scratch / f"upper-{len(list(scratch.iterdir()))}"
        work = scratch / f"work-{len(list(scratch.iterdir()))}"
        upper.mkdir()
        work.mkdir()
        options += [f"upperdir={upper}", f"workdir={work}"]
    return [
        Mount(destination=request.target, type="overlay", source="overlay", options=[*ro, *options])
    ]


def forget_mountpoints(upper: Path, lower: LayerView, targets: list[str]) -> None:
    """Remove from `upper` the mount points the runtime had to create for `targets` (absent
    from the image, left empty), and the parent directories created only for them."""
    for target in targets:
        path = posixpath.normpath(target)
        while path != "/" and lower.lookup(path) is None:
            host = upper / path.lstrip("/")
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                path = posixpath.dirname(path)
                continue
            if stat.S_ISDIR(st.st_mode):
                try:
                    os.rmdir(host)
                except OSError:
                    break  # the step put something there besides the mount
            elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(host)
            else:
                break
            path = posixpath.dirname(path)
