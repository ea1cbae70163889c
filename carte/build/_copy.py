"""COPY and ADD: pick the sources (globs, directories), checksum them for the build cache, and
stage them into an empty directory that then becomes the layer (as an overlay upper would).

Sources are read through a `LayerView` (the build context is a one-layer view), so symlinks are
followed inside the context or image only, never out to the host. Parent directories that
already exist in the image are staged with their existing mode and owner, so `COPY x /tmp/`
does not reset /tmp's sticky bit.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import re
import shutil
import stat
import tarfile
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

import msgspec

from carte.api.tar_members import UnsafeMember, checked_member
from carte.build._layer_view import LayerView

_CHUNK = 1 << 20


class CopySource(msgspec.Struct, frozen=True, kw_only=True):
    """One matched source: its image/context path (absolute, `/`-rooted, symlinks resolved),
    its host path, and the name it is copied under (the name asked for, as Docker does)."""

    path: str
    host: str
    name: str = ""


class Excludes:
    """`COPY --exclude=PATTERN` patterns (.dockerignore syntax: `*`, `?`, `**`), matched
    against a path relative to the source root and relative to the copied source; a matching
    directory is left out with everything below it."""

    def __init__(self, patterns: tuple[str, ...] | list[str]) -> None:
        self.patterns = [posixpath.normpath(p).lstrip("/") for p in patterns if p.strip()]
        self._regexes = [re.compile(_pattern_regex(p)) for p in self.patterns]

    def __bool__(self) -> bool:
        return bool(self._regexes)

    def excluded(self, path: str, base: str = "/") -> bool:
        """Whether the view path `path` (absolute) is left out; `base` is the copied source."""
        relative = path.strip("/")
        roots = [relative]
        if base.strip("/") and relative.startswith(base.strip("/") + "/"):
            roots.append(relative[len(base.strip("/")) + 1 :])
        candidates: set[str] = set()
        for root in roots:  # the path and each of its parents
            parts = root.split("/")
            candidates.update("/".join(parts[: end + 1]) for end in range(len(parts)))
        return any(regex.fullmatch(c) for regex in self._regexes for c in candidates)


def _pattern_regex(pattern: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        else:
            char = pattern[index]
            out.append("[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char))
            index += 1
    return "".join(out)


class SourceError(ValueError):
    """A source that does not exist or lies outside the context; the message names it."""


def match_sources(view: LayerView, patterns: list[str], what: str) -> list[CopySource]:
    """Expand each pattern (relative to the view's root; globs allowed) to existing sources.

    Raises `SourceError` naming the pattern when it leaves the root or matches nothing.
    """
    matched: list[CopySource] = []
    for pattern in patterns:
        normal = posixpath.normpath("/" + pattern)
        if _escapes(pattern):
            raise SourceError(f'source "{pattern}" is outside the {what}; copy from inside it')
        found = _glob(view, normal) if _has_magic(normal) else _exact(view, normal)
        if not found:
            raise SourceError(f'source "{pattern}" was not found in the {what}')
        matched.extend(found)
    return matched


def _escapes(pattern: str) -> bool:
    depth = 0
    for part in pattern.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _has_magic(path: str) -> bool:
    return any(char in path for char in "*?[")


def _exact(view: LayerView, path: str) -> list[CopySource]:
    resolved = view.resolve(path)
    found = view.lookup(resolved)
    name = posixpath.basename(path.rstrip("/")) or posixpath.basename(resolved)
    return [] if found is None else [CopySource(path=resolved, host=found[0], name=name)]


def _glob(view: LayerView, pattern: str) -> list[CopySource]:
    current = ["/"]
    for part in [p for p in pattern.split("/") if p]:
        following: list[str] = []
        for base in current:
            if not view.is_dir(base):
                continue
            resolved = view.resolve(base)
            if _has_magic(part):
                names = [n for n in view.children(resolved) if fnmatch.fnmatchcase(n, part)]
            else:
                names = [part]
            following.extend(posixpath.join(resolved, name) for name in names)
        current = following
    result = []
    for path in current:
        found = view.lookup(path)
        if found is not None:
            result.append(CopySource(path=path, host=found[0], name=posixpath.basename(path)))
    return result


def checksum(
    view: LayerView,
    sources: list[CopySource],
    *,
    with_owner: bool,
    excludes: Excludes | None = None,
) -> str:
    """A digest of the sources' names, types, modes, sizes, link targets and content.

    Modification times are left out (Docker's rule): touching a file keeps the cache.
    """
    digest = hashlib.sha256()

    def add(path: str, host: str, st: os.stat_result, base: str = "/") -> None:
        if excludes and excludes.excluded(path, base):
            return
        owner = f"{st.st_uid}:{st.st_gid}" if with_owner else ""
        digest.update(f"{path}\0{st.st_mode:o}\0{owner}\0".encode())
        if stat.S_ISREG(st.st_mode):
            digest.update(_file_digest(host))
        elif stat.S_ISLNK(st.st_mode):
            digest.update(os.readlink(host).encode())
        elif stat.S_ISDIR(st.st_mode):
            for name, (child_host, child_st) in view.children(path).items():
                add(posixpath.join(path, name), child_host, child_st, base)
        digest.update(b"\n")

    for source in sources:
        found = view.lookup(source.path)
        if found is not None:
            add(source.path, found[0], found[1], source.path)
    return "sha256:" + digest.hexdigest()


def _file_digest(host: str) -> bytes:
    hashed = hashlib.sha256()
    with open(host, "rb") as file:
        while data := file.read(_CHUNK):
            hashed.update(data)
    return hashed.digest()


@dataclass
class Stager:
    """Writes copied entries under `staging` (the future layer's root)."""

    staging: Path
    lower: LayerView
    _: KW_ONLY
    owner: tuple[int, int] | None
    mode: int | None
    excludes: Excludes | None = None

    def host(self, image_path: str) -> str:
        return os.path.join(str(self.staging), image_path.lstrip("/"))

    def ensure_dir(self, image_path: str) -> None:
        """Create `image_path` and its parents in the staging tree, with the image's metadata
        for those that already exist there (new ones: 0755, owned by the --chown owner)."""
        parts = [p for p in image_path.split("/") if p]
        for end in range(1, len(parts) + 1):
            path = "/" + "/".join(parts[:end])
            host = self.host(path)
            if os.path.isdir(host):
                continue
            os.mkdir(host)
            existing = self.lower.lookup(path)
            if existing is not None and stat.S_ISDIR(existing[1].st_mode):
                st = existing[1]
                os.chown(host, st.st_uid, st.st_gid)
                os.chmod(host, stat.S_IMODE(st.st_mode))
                os.utime(host, ns=(st.st_atime_ns, st.st_mtime_ns))
            else:
                os.chmod(host, 0o755)
                if self.owner is not None:
                    os.chown(host, *self.owner)

    def copy(
        self, view: LayerView, source_path: str, dest: str, *, keep_owner: bool, base: str = "/"
    ) -> None:
        """Copy the view's `source_path` (file, link or whole tree) to the image path `dest`;
        `base` is the source as named (for --exclude patterns relative to it)."""
        if self.excludes and self.excludes.excluded(source_path, base):
            return
        found = view.lookup(source_path)
        if found is None:
            raise SourceError(f'source "{source_path}" disappeared while copying')
        host, st = found
        target = self.host(dest)
        self.ensure_dir(posixpath.dirname(dest))
        if stat.S_ISDIR(st.st_mode):
            if not os.path.isdir(target):
                os.mkdir(target)
            self._finish(target, st, keep_owner=keep_owner)
            for name in view.children(source_path):
                self.copy(
                    view,
                    posixpath.join(source_path, name),
                    posixpath.join(dest, name),
                    keep_owner=keep_owner,
                    base=base,
                )
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
            return
        if os.path.lexists(target) and not os.path.isdir(target):
            os.unlink(target)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(host), target)
            owner = (st.st_uid, st.st_gid) if keep_owner else (0, 0)
            os.lchown(target, *(self.owner or owner))
            return
        if not stat.S_ISREG(st.st_mode):
            return  # devices, fifos and sockets are not copied
        shutil.copyfile(host, target, follow_symlinks=False)
        self._finish(target, st, keep_owner=keep_owner)

    def _finish(self, target: str, st: os.stat_result, *, keep_owner: bool) -> None:
        owner = self.owner or ((st.st_uid, st.st_gid) if keep_owner else (0, 0))
        os.chown(target, *owner)
        os.chmod(target, self.mode if self.mode is not None else stat.S_IMODE(st.st_mode))
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))

    def extract_archive(self, host: str, dest: str) -> bool:
        """Extract a local tar (plain, gzip, bzip2, xz) into the image dir `dest`.

        Returns False if `host` is not an archive (the caller copies it as a file). Entries
        that would leave `dest` (absolute, `..`, links out) or device nodes raise
        `SourceError` naming the entry; the caller discards the staging tree.
        """
        try:
            archive = tarfile.open(host, mode="r:*")
        except (tarfile.TarError, OSError):
            return False
        self.ensure_dir(dest)
        with archive:
            if hasattr(tarfile, "data_filter"):
                try:
                    archive.extractall(self.host(dest), filter=self._archive_filter)
                except tarfile.FilterError as error:
                    raise SourceError(f"archive {os.path.basename(host)}: {error}") from None
            else:  # Python < 3.11.4 (Debian 12's 3.11.2) has no extraction filters
                self._extract_checked(archive, self.host(dest), os.path.basename(host))
        return True

    def _extract_checked(self, archive: tarfile.TarFile, root: str, name: str) -> None:
        owner = self.owner
        for member in archive:
            try:
                safe = checked_member(member, root, allow_devices=False)
            except UnsafeMember as error:
                raise SourceError(f"archive {name}: {error}") from None
            if owner is not None:
                safe.uid, safe.gid, safe.uname, safe.gname = owner[0], owner[1], "", ""
            archive.extract(safe, root)

    def _archive_filter(self, member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        safe = tarfile.data_filter(member, path)
        if safe is None:
            return None
        owner = self.owner or (member.uid, member.gid)
        return safe.replace(uid=owner[0], gid=owner[1], uname="", gname="", deep=False)
