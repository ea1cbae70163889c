"""Helpers for the runtime tests: bundles built from the busybox rootfs, a `carte runtime`
runner with a per-test state root, and host checks scoped to one test's resources.

The runtime forks namespaces from a single-threaded process, so tests drive it through the
real CLI (`python -m carte runtime ...`) in a subprocess, as an engine would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import REPO


@dataclass
class Bundle:
    """An OCI bundle: `path` holds config.json and rootfs/; `config` is edited before `write`."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    def write(self) -> Bundle:
        (self.path / "config.json").write_text(json.dumps(self.config))
        return self


@dataclass
class Runtime:
    """Runs `carte runtime --root <state> ...` and remembers the container ids it created."""

    state: Path
    prefix: str
    ids: list[str] = field(default_factory=list)

    def new_id(self, label: str = "c") -> str:
        container_id = f"{self.prefix}-{label}-{len(self.ids)}"
        self.ids.append(container_id)
        return container_id

    def __call__(
        self, *args: str | Path, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run one command. Output goes through files, not pipes: a created container inherits
        the runtime's stdout/stderr and keeps them open after `create` returns."""
        argv = [
            sys.executable,
            "-m",
            "carte",
            "runtime",
            "--root",
            str(self.state),
            *map(str, args),
        ]
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            completed = subprocess.run(
                argv, stdout=out, stderr=err, text=True, input=input, timeout=timeout, cwd=REPO
            )
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(argv, completed.returncode, out.read(), err.read())

    def run(self, bundle: Bundle, *, label: str = "run") -> subprocess.CompletedProcess[str]:
        """`carte runtime run` of `bundle` under a fresh id."""
        bundle.write()
        return self("run", "--bundle", bundle.path, self.new_id(label))


def host_mounts_mentioning(text: str) -> list[str]:
    """Lines of the host's mount table that mention `text` (a test's unique id or path)."""
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if text in line]


def host_cgroup_dirs(container_id: str) -> list[Path]:
    """Cgroup directories on the host named after `container_id` (default /carte/<id>)."""
    return [p for p in Path("/sys/fs/cgroup").glob(f"*/carte/{container_id}") if p.exists()]
