"""RUN: execute one build step in a Carte container and leave its changes in an upper dir.

The step runs through `carte runtime run` (a freshly exec'd, single-threaded process, as the
runtime requires) on a bundle whose root is an overlay of the stage's layers plus a fresh
upper directory. The overlay is mounted inside the container's own mount namespace, so when
the step ends nothing stays mounted on the host; the runtime removes the cgroup. Default
isolation is Docker's (pid, ipc, uts, mount, cgroup namespaces, default capabilities and
seccomp). The network is the caller's (`_network`): `default` joins the namespace at
`netns_path` (plugged into the NAT'd default bridge), `none` a new one with only loopback,
`host` the host's. /etc/resolv.conf, /etc/hosts and the step's `--mount`s are bind-mounted;
mount points the image lacked are removed from the upper dir afterwards, so none of them is
ever committed into a layer.
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec

from carte.api.errors import InvalidArgument
from carte.build._layer_view import LayerView
from carte.build._mounts import forget_mountpoints
from carte.runtime.shim.client import interpreter_command
from carte.runtime.spec import Mount, User, default_spec, encode_spec, overlay_root

_CANCEL_POLL = 0.2  # seconds between checks of the build's cancellation flag


class StepFailed(InvalidArgument):
    """A RUN step exited non-zero; the message names the command and its status."""


class RunStep(msgspec.Struct, frozen=True, kw_only=True):
    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: User
    network: str  # "none", "host" or "default" (the namespace at netns_path)
    shown: str  # the instruction as the user wrote it, for errors
    netns_path: str = ""
    resolv_conf: str | None = None  # bound over /etc/resolv.conf when given
    hosts: str | None = None  # bound over /etc/hosts when given
    mounts: tuple[Mount, ...] = ()  # --mount's, after the default mounts


def run_step(
    step: RunStep,
    lowerdirs: list[Path],
    scratch: Path,
    state_dir: Path,
    output: Callable[[str], None],
    cancelled: Callable[[], bool] = lambda: False,
) -> Path:
    """Run `step` over `lowerdirs` (topmost first) and return the upper dir with its changes.

    `scratch` is an empty directory this step owns; the caller removes it. Output lines are
    passed to `output` as they come. Raises `StepFailed` for a non-zero exit (or when
    `cancelled()` turned true and the step was killed); the runtime cleans up either way.
    """
    bundle = scratch / "bundle"
    upper = scratch / "upper"
    work = scratch / "work"
    empty = scratch / "empty"
    for directory in (bundle / "rootfs", upper, work, empty):
        directory.mkdir(parents=True)
    layers = [str(d) for d in lowerdirs] or [str(empty)]
    container_id = "build-" + uuid.uuid4().hex[:16]
    spec = default_spec(args=list(step.argv), rootfs=str(bundle / "rootfs"), hostname="carte")
    assert spec.process is not None
    spec.process.env = list(step.env)
    spec.process.cwd = step.cwd or "/"
    spec.process.user = step.user
    spec.linux.cgroups_path = f"/carte/{container_id}"
    spec.mounts.insert(0, overlay_root(layers, str(upper), str(work)))
    if step.network == "host":
        spec.linux.namespaces = [ns for ns in spec.linux.namespaces if ns.type != "network"]
    elif step.network == "default":
        for namespace in spec.linux.namespaces:
            if namespace.type == "network":
                namespace.path = step.netns_path
    targets = []
    for name, text in (("resolv.conf", step.resolv_conf), ("hosts", step.hosts)):
        if text is not None:
            host_file = scratch / name
            host_file.write_text(text)
            host_file.chmod(0o644)
            spec.mounts.append(
                Mount(
                    destination=f"/etc/{name}",
                    type="bind",
                    source=str(host_file),
                    options=["rbind", "nosuid", "nodev", "noexec"],
                )
            )
            targets.append(f"/etc/{name}")
    spec.mounts.extend(step.mounts)
    targets.extend(mount.destination for mount in step.mounts)
    (bundle / "config.json").write_bytes(encode_spec(spec))
    argv = [
        *interpreter_command(),
        "runtime",
        "--root",
        str(state_dir),
        "run",
        "--bundle",
        str(bundle),
        container_id,
    ]
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    stdout = process.stdout
    assert stdout is not None

    def relay() -> None:
        for raw in stdout:
            output(raw.decode("utf-8", "replace").rstrip("\n"))

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    polls_since_kill: int | None = None
    try:
        while True:
            try:
                status = process.wait(timeout=_CANCEL_POLL)
                break
            except subprocess.TimeoutExpired:
                # Kill once; again only if the runtime had not created the container yet.
                if cancelled() and (polls_since_kill is None or polls_since_kill > 10):
                    _kill_container(state_dir, container_id)
                    polls_since_kill = 0
                elif polls_since_kill is not None:
                    polls_since_kill += 1
    finally:
        if process.poll() is None:
            _kill_container(state_dir, container_id)
            process.wait()
        reader.join()
        stdout.close()
    forget_mountpoints(upper, LayerView(lowerdirs), targets)
    if cancelled():
        raise StepFailed(f"{step.shown}: the build was cancelled while the step ran")
    if status != 0:
        raise StepFailed(
            f"{step.shown}: the command exited with status {status}; "
            "fix the command (its output is above)"
        )
    return upper


def _kill_container(state_dir: Path, container_id: str) -> None:
    # `runtime run` waits for the container and then deletes it (state dir and cgroup), so
    # killing the container, not the runtime process, is what ends the step cleanly.
    subprocess.run(
        [
            *interpreter_command(),
            "runtime",
            "--root",
            str(state_dir),
            "kill",
            "--all",
            container_id,
            "KILL",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
