"""A read-only merged view of a stack of unpacked layers, without mounting anything.

Overlay semantics: the topmost layer holding a path wins; a whiteout (0/0 character device)
hides the path below; an opaque directory hides the lower layers' children. Symlinks are
followed as if the stack's root were `/`, so nothing outside the layers is ever read.
Used by the builder for `COPY --from`, for the metadata of existing parent directories and
for "is the destination a directory?".
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from carte.image.tarsafe import OPAQUE_XATTR

_MAX_SYMLINKS = 40


class LayerView:
    """The merged tree of `lowerdirs` (topmost first)."""

    def __init__(self, lowerdirs: list[Path]) -> None:
        self.layers = [str(d) for d in lowerdirs]

    def lookup(self, path: str) -> tuple[str, os.stat_result] | None:
        """The host path and lstat of the image path `path` (no symlink following), or None."""
        for host, st in self._entries(path):
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                return None
            return host, st
        return None

    def _entries(self, path: str) -> Iterator[tuple[str, os.stat_result]]:
        """The host path and lstat of `path` in each layer that has it, topmost first, until
        a layer hides the ones below."""
        parts = [p for p in path.split("/") if p and p != "."]
        for layer in self.layers:
            host = os.path.join(layer, *parts) if parts else layer
            try:
                st = os.lstat(host)
            except (FileNotFoundError, NotADirectoryError):
                if self._hidden_below(layer, parts):
                    return
                continue
            yield host, st

    def _hidden_below(self, layer: str, parts: list[str]) -> bool:
        # An opaque or non-directory ancestor in this layer hides every lower layer's entry.
        for end in range(1, len(parts)):
            host = os.path.join(layer, *parts[:end])
            try:
                st = os.lstat(host)
            except (FileNotFoundError, NotADirectoryError):
                return False
            if not stat.S_ISDIR(st.st_mode) or _opaque(host):
                return True
        return False

    def children(self, path: str) -> dict[str, tuple[str, os.stat_result]]:
        """The merged entries of the directory `path`: name -> (host path, lstat)."""
        merged: dict[str, tuple[str, os.stat_result] | None] = {}
        for host, st in self._entries(path):
            if not stat.S_ISDIR(st.st_mode):
                break
            for name in os.listdir(host):
                if name in merged:
                    continue
                child = os.path.join(host, name)
                child_st = os.lstat(child)
                whiteout = stat.S_ISCHR(child_st.st_mode) and child_st.st_rdev == 0
                merged[name] = None if whiteout else (child, child_st)
            if _opaque(host):
                break
        return {name: entry for name, entry in sorted(merged.items()) if entry is not None}

    def resolve(self, path: str) -> str:
        """`path` with every symlink followed inside the view; returns an absolute image path.

        Raises `OSError` (ELOOP) for a symlink loop.
        """
        pending = [p for p in path.split("/") if p and p != "."]
        resolved: list[str] = []
        followed = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            found = self.lookup("/".join([*resolved, part]))
            if found is not None and stat.S_ISLNK(found[1].st_mode):
                followed += 1
                if followed > _MAX_SYMLINKS:
                    raise OSError(40, f"too many levels of symbolic links in {path}")
                target = os.readlink(found[0])
                if target.startswith("/"):
                    resolved = []
                pending = [p for p in target.split("/") if p and p != "."] + pending
                continue
            resolved.append(part)
        return "/" + "/".join(resolved)

    def is_dir(self, path: str) -> bool:
        found = self.lookup(self.resolve(path))
        return found is not None and stat.S_ISDIR(found[1].st_mode)


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False
