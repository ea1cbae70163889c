"""`carte runtime` against the OCI runtime specification v1.1, clause by clause.

Each test quotes the clause it checks (runtime.md "Lifecycle" and "Operations", config.md
"POSIX-platform Hooks", "Valid values", config-linux.md "Rootfs Mount Propagation",
config.md "rlimits").
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from runtime_harness import Bundle, Runtime, host_cgroup_dirs

HOST_NS = os.readlink("/proc/self/ns/mnt")


def _status(runtime: Runtime, container_id: str) -> dict[str, Any]:
    result = runtime("state", container_id)
    assert result.returncode == 0, result.stderr
    state: dict[str, Any] = json.loads(result.stdout)
    return state


def _wait_stopped(runtime: Runtime, container_id: str) -> None:
    deadline = time.monotonic() + 10
    while _status(runtime, container_id)["status"] != "stopped":
        assert time.monotonic() < deadline, f"{container_id} never stopped"
        time.sleep(0.02)


def _host_hook(directory: Path, name: str, body: str) -> str:
    """A /bin/sh hook script on the host (its path resolves in the runtime namespace)."""
    script = directory / f"{name}.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def _recording_hook(directory: Path, log: Path, kind: str) -> dict[str, Any]:
    """A hook appending `kind`, its mount namespace and the state JSON from stdin to `log`."""
    body = (
        f'state=$(cat); printf "%s %s %s\\n" {kind} "$(readlink /proc/self/ns/mnt)" '
        f'"$state" >> {log}\n'
    )
    return {"path": _host_hook(directory, kind, body), "env": ["PATH=/usr/bin:/bin"]}


def _log_entries(log: Path) -> list[tuple[str, str, dict[str, Any]]]:
    entries = []
    for line in log.read_text().splitlines():
        kind, namespace, state = line.split(" ", 2)
        entries.append((kind, namespace, json.loads(state)))
    return entries


def _logged(log: Path, index: int, field: str) -> tuple[str, str, str, Any]:
    """Hook call `index` of the log: its kind, namespace, state status and state `field`."""
    kind, namespace, state = _log_entries(log)[index]
    return kind, namespace, state["status"], state[field]


def _created(runtime: Runtime, bundle: Bundle, tmp_path: Path, tag: str) -> tuple[str, int]:
    """`create` of `bundle`, which must succeed; the container's id and its process's pid."""
    container_id = runtime.new_id(tag)
    pid_file = tmp_path / "pid"
    created = runtime("create", "--bundle", bundle.path, "--pid-file", pid_file, container_id)
    assert created.returncode == 0, created.stderr
    return container_id, int(pid_file.read_text())


def _failed_create(runtime: Runtime, bundle: Bundle, tmp_path: Path, tag: str) -> str:
    """`create` of `bundle`, which must fail with one line on stderr and leave nothing behind
    (no pid file, no container state, no cgroup); that line."""
    container_id = runtime.new_id(tag)
    pid_file = tmp_path / "pid"
    result = runtime("create", "--bundle", bundle.path, "--pid-file", pid_file, container_id)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert not pid_file.exists()
    assert runtime("state", container_id).returncode == 1
    assert host_cgroup_dirs(container_id) == []
    return result.stderr


@pytest.fixture
def hook_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "hooks"
    directory.mkdir()
    return directory


def test_every_hook_runs_in_order_with_the_state_on_stdin(
    runtime: Runtime, make_bundle: Callable[..., Bundle], hook_dir: Path, tmp_path: Path
) -> None:
    """config.md: "The state of the container MUST be passed to hooks over stdin"; prestart,
    createRuntime and poststart/poststop in the runtime namespace with the pid the runtime
    sees, createContainer executed in the container namespace (path resolved in the
    runtime's), startContainer resolved and executed in the container; runtime.md: status
    creating during create, created before start, running after."""
    log = tmp_path / "hooks.log"
    bundle = make_bundle(shell="echo ran > /ran; exec sleep 1000")
    # Resolved inside the container: a busybox script in the rootfs, writing into the rootfs.
    (bundle.rootfs / "start-hook").write_text(
        '#!/bin/sh\nstate=$(cat); echo "$HOOK_WORD $(readlink /proc/self/ns/mnt) $state"'
        " > /start-hook.out\n"
    )
    (bundle.rootfs / "start-hook").chmod(0o755)
    bundle.config["hooks"] = {
        kind: [_recording_hook(hook_dir, log, kind)]
        for kind in ("prestart", "createRuntime", "createContainer", "poststart", "poststop")
    }
    bundle.config["hooks"]["startContainer"] = [
        {"path": "/start-hook", "args": ["start-hook"], "env": ["HOOK_WORD=inside", "PATH=/bin"]}
    ]
    bundle.config["annotations"] = {"org.example.key": "value"}
    bundle.write()
    container_id, pid = _created(runtime, bundle, tmp_path, "hooks")
    container_ns = os.readlink(f"/proc/{pid}/ns/mnt")
    assert container_ns != HOST_NS
    entries = _log_entries(log)
    assert [kind for kind, _, _ in entries] == ["prestart", "createRuntime", "createContainer"]
    for kind, namespace, state in entries:
        assert state["id"] == container_id
        assert state["status"] == "creating"
        assert state["bundle"] == str(bundle.path)
        assert state["annotations"] == {"org.example.key": "value"}
        assert state["ociVersion"].startswith("1.")
        if kind == "createContainer":
            assert (namespace, state["pid"]) == (container_ns, 1), "not in the container"
        else:
            assert (namespace, state["pid"]) == (HOST_NS, pid), "not in the runtime namespace"
    assert not (bundle.rootfs / "start-hook.out").exists(), "startContainer ran at create"

    started = runtime("start", container_id)
    assert started.returncode == 0, started.stderr
    word, namespace, raw_state = (bundle.rootfs / "start-hook.out").read_text().split(" ", 2)
    assert (word, namespace) == ("inside", container_ns)
    assert json.loads(raw_state)["status"] == "created"
    assert json.loads(raw_state)["pid"] == 1
    assert _logged(log, 3, "pid") == ("poststart", HOST_NS, "running", pid)

    assert runtime("kill", container_id, "KILL").returncode == 0
    _wait_stopped(runtime, container_id)
    assert runtime("delete", container_id).returncode == 0
    assert _logged(log, 4, "id") == ("poststop", HOST_NS, "stopped", container_id)
    assert len(_log_entries(log)) == 5


def test_hook_gets_its_args_and_exactly_its_env(
    runtime: Runtime, make_bundle: Callable[..., Bundle], hook_dir: Path, tmp_path: Path
) -> None:
    """config.md: args "with the same semantics as IEEE Std 1003.1-2008 execv's argv", env
    "with the same semantics as IEEE Std 1003.1-2008's environ"."""
    out = tmp_path / "hook.out"
    path = _host_hook(hook_dir, "args", f'echo "$0 $1 $2"> {out}; /usr/bin/env >> {out}\n')
    bundle = make_bundle("true")
    bundle.config["hooks"] = {
        "createRuntime": [{"path": path, "args": ["argv-zero", "one", "two"], "env": ["ONLY=me"]}]
    }
    result = runtime.run(bundle)
    assert result.returncode == 0, result.stderr
    first, *environment = out.read_text().splitlines()
    assert first.split()[1:] == ["one", "two"]
    assert "ONLY=me" in environment
    assert not [line for line in environment if line.startswith(("HOME=", "PYTHONPATH="))]


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
def test_a_failing_create_hook_fails_create_and_tears_down(
    kind: str,
    runtime: Runtime,
    make_bundle: Callable[..., Bundle],
    hook_dir: Path,
    tmp_path: Path,
) -> None:
    """runtime.md: "If any `<kind>` hook fails, the runtime MUST generate an error, stop the
    container, and continue the lifecycle at step 12" (destroy, then poststop hooks)."""
    log = tmp_path / "hooks.log"
    bundle = make_bundle("true")
    failing = {"path": _host_hook(hook_dir, "fail", "cat >/dev/null; exit 3\n")}
    bundle.config["hooks"] = {
        kind: [failing, _recording_hook(hook_dir, log, "after-failure")],
        "createContainer": [_recording_hook(hook_dir, log, "createContainer")]
        if kind != "createContainer"
        else [failing],
        "poststop": [_recording_hook(hook_dir, log, "poststop")],
    }
    bundle.write()
    error = _failed_create(runtime, bundle, tmp_path, "fail")
    assert f"{kind} hook 0" in error and "exited with status 3" in error
    assert [entry[0] for entry in _log_entries(log)] == ["poststop"]
    assert _log_entries(log)[0][2]["status"] == "stopped"


def test_hook_timeout_kills_the_hook_and_fails_create(
    runtime: Runtime, make_bundle: Callable[..., Bundle], hook_dir: Path
) -> None:
    """config.md: "timeout (int, OPTIONAL) is the number of seconds before aborting the hook"."""
    bundle = make_bundle("true")
    slow = _host_hook(hook_dir, "slow", "exec /bin/sleep 60\n")
    bundle.config["hooks"] = {"createRuntime": [{"path": slow, "timeout": 1}]}
    started = time.monotonic()
    result = runtime.run(bundle)
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert "createRuntime hook 0" in result.stderr and "timed out after 1 s" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_failing_start_container_hook_fails_start(
    runtime: Runtime, make_bundle: Callable[..., Bundle], hook_dir: Path, tmp_path: Path
) -> None:
    """runtime.md: "If any `startContainer` hook fails, the runtime MUST generate an error,
    stop the container, and continue the lifecycle at step 12"; the user program never runs."""
    log = tmp_path / "hooks.log"
    bundle = make_bundle(shell="echo ran > /ran")
    (bundle.rootfs / "refuse").write_text("#!/bin/sh\necho no ldconfig >&2\nexit 4\n")
    (bundle.rootfs / "refuse").chmod(0o755)
    bundle.config["hooks"] = {
        "startContainer": [{"path": "/refuse"}],
        "poststart": [_recording_hook(hook_dir, log, "poststart")],
        "poststop": [_recording_hook(hook_dir, log, "poststop")],
    }
    bundle.write()
    container_id = runtime.new_id("start")
    assert runtime("create", "--bundle", bundle.path, container_id).returncode == 0
    result = runtime("start", container_id)
    assert result.returncode == 1
    assert "startContainer hook 0 (/refuse) exited with status 4" in result.stderr
    _wait_stopped(runtime, container_id)
    assert not (bundle.rootfs / "ran").exists(), "the user program ran after a failed hook"
    assert runtime("delete", container_id).returncode == 0
    assert [entry[0] for entry in _log_entries(log)] == ["poststop"]


def test_failing_poststart_and_poststop_hooks_only_warn(
    runtime: Runtime, make_bundle: Callable[..., Bundle], hook_dir: Path, tmp_path: Path
) -> None:
    """runtime.md: "If any `poststart` [`poststop`] hook fails, the runtime MUST log a warning,
    but the remaining hooks and lifecycle continue as if the hook had succeeded"."""
    log = tmp_path / "hooks.log"
    bundle = make_bundle("sleep", "1000")
    failing = {"path": _host_hook(hook_dir, "fail", "exit 9\n")}
    bundle.config["hooks"] = {
        "poststart": [failing, _recording_hook(hook_dir, log, "poststart")],
        "poststop": [failing, _recording_hook(hook_dir, log, "poststop")],
    }
    bundle.write()
    container_id = runtime.new_id("warn")
    assert runtime("create", "--bundle", bundle.path, container_id).returncode == 0
    started = runtime("start", container_id)
    assert started.returncode == 0, started.stderr
    assert "warning: poststart hook 0" in started.stderr
    assert _status(runtime, container_id)["status"] == "running"
    deleted = runtime("delete", "--force", container_id)
    assert deleted.returncode == 0, deleted.stderr
    assert "warning: poststop hook 0" in deleted.stderr
    assert [entry[0] for entry in _log_entries(log)] == ["poststart", "poststop"]
    assert runtime("state", container_id).returncode == 1


def test_delete_of_a_created_container_fails_and_changes_nothing(
    runtime: Runtime, make_bundle: Callable[..., Bundle], tmp_path: Path
) -> None:
    """runtime.md: "Attempting to `delete` a container that is not `stopped` MUST have no
    effect on the container and MUST generate an error"; `--force` kills it first, as runc."""
    bundle = make_bundle(shell="echo ran > /ran").write()
    container_id = runtime.new_id("del")
    assert runtime("create", "--bundle", bundle.path, container_id).returncode == 0
    before = _status(runtime, container_id)
    refused = runtime("delete", container_id)
    assert refused.returncode == 1
    assert "it is created, not stopped" in refused.stderr and "--force" in refused.stderr
    assert _status(runtime, container_id) == before
    assert host_cgroup_dirs(container_id)
    # Still startable: nothing was changed.
    assert runtime("start", container_id).returncode == 0
    _wait_stopped(runtime, container_id)
    assert (bundle.rootfs / "ran").read_text() == "ran\n"
    assert runtime("delete", container_id).returncode == 0

    second = runtime.new_id("del")
    assert runtime("create", "--bundle", bundle.path, second).returncode == 0
    pid = _status(runtime, second)["pid"]
    assert runtime("delete", "--force", second).returncode == 0
    assert runtime("state", second).returncode == 1
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


@pytest.fixture
def shared_rootfs_mount(make_bundle: Callable[..., Bundle]) -> Iterator[Bundle]:
    """A bundle whose rootfs is a shared mount point on the host (the host's / is private
    here), so propagation from the host can be seen."""
    bundle = make_bundle()
    subprocess.run(["mount", "--bind", bundle.rootfs, bundle.rootfs], check=True)
    try:
        subprocess.run(["mount", "--make-shared", bundle.rootfs], check=True)
        (bundle.rootfs / "mnt" / "seen").mkdir(parents=True, exist_ok=True)
        yield bundle
    finally:
        subprocess.run(["umount", "-R", "-l", bundle.rootfs], check=True)


def _root_propagation(mountinfo_line: str) -> set[str]:
    fields = mountinfo_line.split()
    optional = fields[6 : fields.index("-")]
    return {field.split(":")[0] for field in optional}


def _host_peer_groups() -> set[str]:
    groups = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        groups |= {f for f in fields[6 : fields.index("-")] if f.startswith("shared:")}
    return groups


@pytest.mark.parametrize(
    ("propagation", "expected", "sees_host_mount"),
    [
        ("shared", {"shared", "master"}, True),
        ("slave", {"master"}, True),
        ("private", set(), False),
        ("unbindable", {"unbindable"}, False),
    ],
)
def test_rootfs_propagation(
    propagation: str,
    expected: set[str],
    sees_host_mount: bool,
    runtime: Runtime,
    shared_rootfs_mount: Bundle,
) -> None:
    """config-linux.md rootfsPropagation: shared = "a new peer group ... does not mean that it's
    shared with the host"; slave = "receives propagation events from the host"; private =
    "doesn't receive mount propagation events from the host"; unbindable = "a private mount
    that cannot be bind-mounted"."""
    bundle = shared_rootfs_mount
    bundle.config["linux"]["rootfsPropagation"] = propagation
    bundle.config["process"]["args"] = [
        "sh",
        "-c",
        "grep -E '^[0-9]+ [0-9]+ [^ ]+ [^ ]+ / ' /proc/self/mountinfo > /result.tmp; "
        "i=0; while [ ! -e /mnt/seen/marker ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done; "
        "if [ -e /mnt/seen/marker ]; then echo seen; else echo unseen; fi >> /result.tmp; "
        "mv /result.tmp /result",
    ]
    bundle.write()
    container_id = runtime.new_id("prop")
    assert runtime("create", "--bundle", bundle.path, container_id).returncode == 0
    assert runtime("start", container_id).returncode == 0
    seen = bundle.rootfs / "mnt" / "seen"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "marker", seen], check=True)
    try:
        (seen / "marker").write_text("")
        _wait_stopped(runtime, container_id)
    finally:
        subprocess.run(["umount", seen], check=True)
    root_line, visibility = (bundle.rootfs / "result").read_text().splitlines()
    assert _root_propagation(root_line) == expected, root_line
    assert visibility == ("seen" if sees_host_mount else "unseen")
    if propagation == "shared":
        group = next(f for f in root_line.split() if f.startswith("shared:"))
        assert group not in _host_peer_groups(), "the container's root is shared with the host"


def test_every_rlimit_is_applied_exactly(
    runtime: Runtime, make_bundle: Callable[..., Bundle]
) -> None:
    """config.md rlimits: "rlim.rlim_cur MUST match the configured value", "rlim.rlim_max MUST
    match the configured value" (2^64-1 being RLIM_INFINITY); with Carte's init too."""
    for init in (False, True):
        bundle = make_bundle("cat", "/proc/self/limits")
        bundle.config["process"]["rlimits"] = [
            {"type": "RLIMIT_NOFILE", "soft": 3000, "hard": 4000},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 2**64 - 1},
            {"type": "RLIMIT_NPROC", "soft": 500, "hard": 600},
            {"type": "RLIMIT_MSGQUEUE", "soft": 8192, "hard": 16384},
        ]
        if init:
            bundle.config["annotations"] = {"run.carte.init": "true"}
        result = runtime.run(bundle)
        assert result.returncode == 0, result.stderr
        limits = {
            line[:26].strip(): line[26:].split()[:2] for line in result.stdout.splitlines()[1:]
        }
        assert limits["Max open files"] == ["3000", "4000"]
        assert limits["Max core file size"] == ["0", "unlimited"]
        assert limits["Max processes"] == ["500", "600"]
        assert limits["Max msgqueue size"] == ["8192", "16384"]


INVALID_SPECS: list[tuple[str, Callable[[dict[str, Any]], object], str]] = [
    ("oci-version", lambda c: c.update(ociVersion="2.0.0"), 'ociVersion "2.0.0"'),
    ("empty-args", lambda c: c["process"].update(args=[]), "process.args is empty"),
    ("relative-cwd", lambda c: c["process"].update(cwd="tmp"), 'process.cwd "tmp"'),
    (
        "rlimit-type",
        lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}]),
        'process.rlimits[0].type "RLIMIT_NOPE"',
    ),
    (
        "rlimit-twice",
        lambda c: c["process"]["rlimits"].append(c["process"]["rlimits"][0]),
        "process.rlimits[1]: RLIMIT_NOFILE is given twice",
    ),
    (
        "rlimit-soft-above-hard",
        lambda c: c["process"].update(
            rlimits=[{"type": "RLIMIT_NOFILE", "soft": 3000, "hard": 2000}]
        ),
        "process.rlimits[0]: soft 3000 is above hard 2000",
    ),
    (
        "rlimit-negative",
        lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_CORE", "soft": -1, "hard": 1}]),
        "process.rlimits[0].soft -1 is out of range",
    ),
    (
        "capability",
        lambda c: c["process"]["capabilities"]["bounding"].append("CAP_FLY"),
        'process.capabilities.bounding: unknown capability "CAP_FLY"',
    ),
    (
        "oom-score",
        lambda c: c["process"].update(oomScoreAdj=5000),
        "process.oomScoreAdj 5000 is out of range",
    ),
    (
        "namespace-type",
        lambda c: c["linux"]["namespaces"].append({"type": "time"}),
        'linux.namespaces[6].type "time" is not supported',
    ),
    (
        "namespace-twice",
        lambda c: c["linux"]["namespaces"].append({"type": "pid"}),
        'linux.namespaces: "pid" is given twice',
    ),
    (
        "propagation",
        lambda c: c["linux"].update(rootfsPropagation="everywhere"),
        'linux.rootfsPropagation "everywhere" is not a propagation type',
    ),
    (
        "hostname-without-uts",
        lambda c: c["linux"].update(namespaces=[{"type": "mount"}, {"type": "pid"}]),
        'hostname is set but linux.namespaces has no "uts"',
    ),
    (
        "relative-mount",
        lambda c: c["mounts"].append({"destination": "data", "type": "tmpfs"}),
        'mounts[7].destination "data" is not an absolute path',
    ),
    (
        "relative-hook",
        lambda c: c.update(hooks={"poststop": [{"path": "cleanup.sh"}]}),
        'hooks.poststop[0].path "cleanup.sh" is not an absolute path',
    ),
    (
        "hook-timeout",
        lambda c: c.update(hooks={"prestart": [{"path": "/bin/true", "timeout": 0}]}),
        "hooks.prestart[0].timeout 0 must be greater than zero",
    ),
    (
        "personality",
        lambda c: c["linux"].update(personality={"domain": "LINUX32"}),
        "linux.personality is not supported by Carte",
    ),
    (
        "mounts-without-mount-namespace",
        lambda c: c["linux"].update(
            namespaces=[ns for ns in c["linux"]["namespaces"] if ns["type"] != "mount"]
        ),
        'mounts needs a mount namespace, and linux.namespaces has no "mount"',
    ),
]


@pytest.mark.parametrize(
    ("edit", "message"),
    [(edit, message) for _, edit, message in INVALID_SPECS],
    ids=[name for name, _, _ in INVALID_SPECS],
)
def test_invalid_or_unsupported_values_are_refused(
    edit: Callable[[dict[str, Any]], object],
    message: str,
    runtime: Runtime,
    make_bundle: Callable[..., Bundle],
    tmp_path: Path,
) -> None:
    """config.md "Valid values": "Runtimes MUST generate an error when invalid or unsupported
    values are encountered"; runtime.md create: "a new container MUST NOT be created"."""
    bundle = make_bundle("true")
    edit(bundle.config)
    bundle.write()
    error = _failed_create(runtime, bundle, tmp_path, "bad")
    assert error.startswith(f"carte runtime: {bundle.path / 'config.json'}: {message}")


def test_a_spec_without_a_mount_namespace_shares_the_host_mount_table(
    runtime: Runtime, make_bundle: Callable[..., Bundle], tmp_path: Path
) -> None:
    """config-linux.md namespaces: "If a namespace type is not specified in the namespaces
    array, the container MUST inherit the runtime namespace of that type"; the root is still
    root.path (chroot), and nothing is mounted on the host."""
    bundle = make_bundle(shell="cat /marker > /copied")
    (bundle.rootfs / "marker").write_text("inside the rootfs\n")
    config = bundle.config
    config["linux"]["namespaces"] = [
        ns for ns in config["linux"]["namespaces"] if ns["type"] != "mount"
    ]
    config["mounts"] = []
    config["linux"]["maskedPaths"] = []
    config["linux"]["readonlyPaths"] = []
    bundle.write()
    container_id, pid = _created(runtime, bundle, tmp_path, "nomnt")
    assert os.readlink(f"/proc/{pid}/ns/mnt") == HOST_NS
    assert os.readlink(f"/proc/{pid}/root") == str(bundle.rootfs)
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    assert runtime("start", container_id).returncode == 0
    _wait_stopped(runtime, container_id)
    assert (bundle.rootfs / "copied").read_text() == "inside the rootfs\n"
    assert runtime("delete", container_id).returncode == 0
