"""created -> running -> stopped as the runtime spec says, its errors, and clean failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from runtime_harness import REPO, Bundle, Runtime, host_cgroup_dirs


def _status(runtime: Runtime, container_id: str) -> str:
    result = runtime("state", container_id)
    assert result.returncode == 0, result.stderr
    status: str = json.loads(result.stdout)["status"]
    return status


def _wait_for_status(runtime: Runtime, container_id: str, wanted: str) -> None:
    deadline = time.monotonic() + 10
    while _status(runtime, container_id) != wanted:
        assert time.monotonic() < deadline, f"{container_id} never became {wanted}"
        time.sleep(0.02)


def test_create_start_kill_delete(
    runtime: Runtime, make_bundle: Callable[..., Bundle], tmp_path: Path
) -> None:
    bundle = make_bundle(shell="echo started > /started; exec sleep 1000").write()
    container_id = runtime.new_id("life")
    pid_file = tmp_path / "pid"
    created = runtime("create", "--bundle", bundle.path, "--pid-file", pid_file, container_id)
    assert created.returncode == 0, created.stderr
    state = json.loads(runtime("state", container_id).stdout)
    assert state["status"] == "created"
    assert state["id"] == container_id
    assert state["bundle"] == str(bundle.path)
    assert state["pid"] == int(pid_file.read_text()) > 0
    assert not (bundle.rootfs / "started").exists(), "the user process ran before start"
    assert host_cgroup_dirs(container_id), "create made no cgroup"

    started = runtime("start", container_id)
    assert started.returncode == 0, started.stderr
    assert _status(runtime, container_id) == "running"

    again = runtime("start", container_id)
    assert again.returncode == 1
    assert f'cannot start container "{container_id}": it is running' in again.stderr

    refused = runtime("delete", container_id)
    assert refused.returncode == 1
    assert "it is running" in refused.stderr and "--force" in refused.stderr

    assert runtime("kill", container_id, "KILL").returncode == 0
    _wait_for_status(runtime, container_id, "stopped")
    assert json.loads(runtime("state", container_id).stdout)["pid"] == 0
    not_running = runtime("kill", container_id)
    assert "not running" in not_running.stderr

    assert runtime("delete", container_id).returncode == 0
    gone = runtime("state", container_id)
    assert gone.returncode == 1
    assert f'container "{container_id}" does not exist' in gone.stderr
    assert host_cgroup_dirs(container_id) == []


def test_kill_takes_signal_names_and_numbers(
    runtime: Runtime, make_bundle: Callable[..., Bundle]
) -> None:
    bundle = make_bundle(shell="trap 'exit 7' USR1; while true; do sleep 0.05; done").write()
    container_id = runtime.new_id("sig")
    assert runtime("create", "--bundle", bundle.path, container_id).returncode == 0
    assert runtime("start", container_id).returncode == 0
    assert runtime("kill", container_id, "SIGUSR1").returncode == 0
    _wait_for_status(runtime, container_id, "stopped")
    bad = runtime("kill", container_id, "NOPE")
    assert bad.returncode == 1
    assert "unknown signal" in bad.stderr or "not running" in bad.stderr
    assert runtime("delete", container_id).returncode == 0


def test_delete_force_removes_a_running_container(
    runtime: Runtime, make_bundle: Callable[..., Bundle]
) -> None:
    bundle = make_bundle("sleep", "1000").write()
    container_id = runtime.new_id("force")
    assert runtime("create", "--bundle", bundle.path, container_id).returncode == 0
    assert runtime("start", container_id).returncode == 0
    pid = json.loads(runtime("state", container_id).stdout)["pid"]
    assert runtime("delete", "--force", container_id).returncode == 0
    assert host_cgroup_dirs(container_id) == []
    assert not os.path.exists(f"/proc/{pid}/cmdline") or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_unknown_id_errors(runtime: Runtime) -> None:
    for command in (["state"], ["start"], ["kill"], ["delete"]):
        result = runtime(*command, "nosuch")
        assert result.returncode == 1
        assert result.stderr.strip() == (
            'carte runtime: container "nosuch" does not exist; list containers with '
            "`carte runtime list`"
        )


def test_run_returns_the_exit_code(runtime: Runtime, make_bundle: Callable[..., Bundle]) -> None:
    result = runtime.run(make_bundle(shell="echo out; echo err >&2; exit 42"))
    assert result.returncode == 42
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"


def test_missing_executable_exits_127(runtime: Runtime, make_bundle: Callable[..., Bundle]) -> None:
    result = runtime.run(make_bundle("no-such-program", "arg"))
    assert result.returncode == 127
    assert result.stderr.strip() == 'exec: "no-such-program": executable file not found in $PATH'


def test_malformed_config_names_the_field(
    runtime: Runtime, make_bundle: Callable[..., Bundle]
) -> None:
    bundle = make_bundle()
    bundle.config["process"]["args"] = "sh -c true"
    result = runtime.run(bundle)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "config.json" in line and "$.process.args" in line and "array" in line


def test_failed_create_leaves_nothing_behind(
    runtime: Runtime, make_bundle: Callable[..., Bundle], tmp_path: Path
) -> None:
    bundle = make_bundle()
    bundle.config["mounts"].append(
        {
            "destination": "/data",
            "type": "bind",
            "source": str(tmp_path / "missing"),
            "options": ["rbind"],
        }
    )
    container_id = runtime.new_id("fail")
    bundle.write()
    result = runtime("create", "--bundle", bundle.path, container_id)
    assert result.returncode == 1
    assert str(tmp_path / "missing") in result.stderr
    assert "Traceback" not in result.stderr
    assert host_cgroup_dirs(container_id) == []
    assert not (runtime.state / container_id).exists()
    assert runtime("state", container_id).returncode == 1


def test_duplicate_id_is_refused(runtime: Runtime, make_bundle: Callable[..., Bundle]) -> None:
    bundle = make_bundle("sleep", "1000").write()
    container_id = runtime.new_id("dup")
    assert runtime("create", "--bundle", bundle.path, container_id).returncode == 0
    again = runtime("create", "--bundle", bundle.path, container_id)
    assert again.returncode == 1
    assert f'container "{container_id}" already exists' in again.stderr
    assert _status(runtime, container_id) == "created"


def test_list_shows_containers(runtime: Runtime, make_bundle: Callable[..., Bundle]) -> None:
    bundle = make_bundle("sleep", "1000").write()
    container_id = runtime.new_id("list")
    assert runtime("create", "--bundle", bundle.path, container_id).returncode == 0
    listing = runtime("list").stdout.splitlines()
    assert listing[0].split()[:3] == ["ID", "PID", "STATUS"]
    assert any(line.split()[0] == container_id and "created" in line for line in listing[1:])


def test_spec_prints_the_default_config(runtime: Runtime) -> None:
    spec = json.loads(runtime("spec").stdout)
    namespaces = {ns["type"] for ns in spec["linux"]["namespaces"]}
    assert namespaces == {"pid", "network", "ipc", "uts", "mount", "cgroup"}
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]
    assert "/proc/sys" in spec["linux"]["readonlyPaths"]
    assert spec["process"]["noNewPrivileges"] is True
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"


def test_init_annotation_keeps_carte_init_as_pid_one(
    runtime: Runtime, make_bundle: Callable[..., Bundle]
) -> None:
    bundle = make_bundle(shell="echo $$; cat /proc/1/cmdline | tr '\\0' '|'; echo; exit 3")
    bundle.config["annotations"] = {"run.carte.init": "true"}
    result = runtime.run(bundle)
    assert result.returncode == 3, result.stderr
    shell_pid, init_cmdline = result.stdout.split()
    assert shell_pid != "1"
    assert init_cmdline == "carte-init|"


def test_init_holds_no_more_than_the_workload(
    runtime: Runtime, make_bundle: Callable[..., Bundle]
) -> None:
    """Issue 11 item 8: PID 1 had every capability, no seccomp and no no_new_privs."""
    fields = "^(Uid|Gid|Groups|Cap...|NoNewPrivs|Seccomp):"
    for uid in (0, 1000):
        bundle = make_bundle(
            shell=f"grep -E '{fields}' /proc/1/status; echo ===; grep -E '{fields}' /proc/$$/status"
            "; echo ===; readlink /proc/1/exe; cat /proc/1/environ; true"
        )
        bundle.config["annotations"] = {"run.carte.init": "true"}
        bundle.config["process"]["user"] = {"uid": uid, "gid": uid, "additionalGids": [uid + 1]}
        result = runtime.run(bundle)
        assert result.returncode == 0, result.stderr
        init, workload, reach = result.stdout.split("===")
        assert init.split() == workload.split()
        assert "NoNewPrivs:\t1" in init and "Seccomp:\t2" in init
        # Init is Python: its exe is the host's interpreter, its environ the shim's.
        assert reach.strip() == "", "the workload reaches PID 1's exe or environ"


def test_container_starts_with_default_signal_dispositions(
    runtime: Runtime, make_bundle: Callable[..., Bundle]
) -> None:
    """Python ignores SIGPIPE; the container must not inherit that (`yes | head` must end)."""
    result = runtime.run(make_bundle("grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"))
    assert result.returncode == 0, result.stderr
    masks = dict(line.split(":\t") for line in result.stdout.splitlines())
    assert int(masks["SigBlk"], 16) == 0
    assert int(masks["SigIgn"], 16) == 0


def test_process_user_umask_rlimits_and_oom_score(
    runtime: Runtime, make_bundle: Callable[..., Bundle]
) -> None:
    bundle = make_bundle(
        shell="id -u; id -g; id -G; umask; ulimit -n; cat /proc/self/oom_score_adj; pwd; "
        "touch /tmp/made && stat -c %a /tmp/made"
    )
    process = bundle.config["process"]
    process["user"] = {"uid": 65534, "gid": 65534, "additionalGids": [10, 20], "umask": 0o027}
    process["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 400}]
    process["oomScoreAdj"] = 432
    process["cwd"] = "/tmp/work/dir"
    result = runtime.run(bundle)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert lines[0] == "65534"
    assert lines[1] == "65534"
    assert sorted(lines[2].split()) == ["10", "20", "65534"]
    assert lines[3] == "0027"
    assert lines[4] == "321"
    assert lines[5] == "432"
    assert lines[6] == "/tmp/work/dir"
    assert lines[7] == "640"


def test_only_stdio_and_preserved_fds_reach_the_process(
    runtime: Runtime, make_bundle: Callable[..., Bundle], tmp_path: Path
) -> None:
    bundle = make_bundle(shell="echo /proc/$$/fd/*; cat <&3")
    bundle.write()
    shared = tmp_path / "shared"
    shared.write_text("through fd 3\n")
    container_id = runtime.new_id("fds")
    with open(shared) as passed, open(tmp_path / "out", "w+") as out:
        assert passed.fileno() != 3
        result = subprocess.run(
            [sys.executable, "-m", "carte", "runtime", "--root", str(runtime.state), "run",
             "--preserve-fds", "1", "--bundle", str(bundle.path), container_id],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, timeout=60, close_fds=False,
            preexec_fn=lambda: os.dup2(passed.fileno(), 3),
        )  # fmt: skip
        out.seek(0)
        output = out.read()
    assert result.returncode == 0, output
    fds, _, rest = output.partition("\n")
    # The shell's glob holds one more fd open on /proc/$$/fd itself while listing it.
    assert [path.rsplit("/", 1)[1] for path in fds.split()] == ["0", "1", "2", "3", "4"]
    assert "through fd 3" in rest
