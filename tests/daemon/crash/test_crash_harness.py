"""Crash consistency: the daemon is SIGKILLed at random points during create, start (run -d),
apply, scale, rollout, import, build and network create, started again, and then what it
records must agree with what is on the host:

- no container lost or duplicated: `carte ps -a` against the records (ROOT/containers), the
  runtime's state dirs (RUN_ROOT/runtime), the cgroups and the shims, unique names, and
  every container, stack, image and network whose command had succeeded before the kill;
- records and kernel state agree: every network's bridge exists and has one port (veth) per
  running container attached, the nftables table exists and names no address that is not a
  listed container's, mounts under the daemon's directories belong to listed containers;
- no half-written layer is visible: every ROOT/layers entry has its `done` marker (a
  `.unpack-*` left by a kill is gone after the restart) and every image `carte images`
  lists has its config and layer blobs.

Kill points are seeded and reproducible: CARTE_CRASH_SEED (default 1) picks each point's
operation and its delay, drawn uniformly over that operation's measured duration;
CARTE_CRASH_POINTS (default 20, the CI run; 200 for the full run) says how many;
CARTE_CRASH_KEEP_GOING=1 lists every point's new problems at the end instead of stopping;
CARTE_CRASH_KINDS=start,apply kills only during those. A failure names the seed, the point,
the operation and the delay, so `CARTE_CRASH_SEED=S CARTE_CRASH_POINTS=N` replays it (as far
as the machine's timing allows)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.daemon import Daemon, DaemonFactory
from support.leftovers import (
    _mount_points_under,
    bridge_ports,
    cgroup_dirs,
    host_leftovers,
    link_exists,
    processes_mentioning,
    remove_leftovers,
)
from support.module_daemon import alive, empty

from carte.handlers.network._records import bridge_name, nft_table_name
from carte.image.layers import DONE_MARKER, UNPACK_PREFIX
from carte.image.oci import decode_manifest
from carte.image.store import ImageStore

SEED = int(os.environ.get("CARTE_CRASH_SEED", "1"))
POINTS = int(os.environ.get("CARTE_CRASH_POINTS", "20"))
HEX64 = re.compile(r"\b[0-9a-f]{64}\b")

STACK = """\
services:
  web:
    image: busybox
    command: ["sleep", "100000"]
    stop_signal: SIGKILL
    environment:
      REVISION: "{revision}"
    deploy:
      replicas: {replicas}
      update_config:
        parallelism: 1
"""


class Operation:
    """One operation run through the client in a thread: a list of client argvs run in turn,
    and what must exist afterwards if every one of them succeeded (kind, name)."""

    def __init__(self, name: str, argvs: list[list[str]], promise: tuple[str, str] | None):
        self.name = name
        self.argvs = argvs
        self.promise = promise
        self.codes: list[int] = []
        self.thread: threading.Thread | None = None

    def start(self, daemon: Daemon) -> None:
        def run() -> None:
            for argv in self.argvs:
                try:
                    code = daemon.client(*argv, timeout=120).returncode
                except subprocess.TimeoutExpired:
                    code = -1
                self.codes.append(code)
                if code != 0:
                    return

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 150.0) -> None:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.name}: the client still runs after {timeout} s"

    @property
    def succeeded(self) -> bool:
        return len(self.codes) == len(self.argvs) and not any(self.codes)


class Harness:
    def __init__(self, daemon: Daemon, busybox_tar: Path, work: Path) -> None:
        self.daemon = daemon
        self.busybox_tar = busybox_tar
        self.work = work
        self.counter = 0
        self.promised: set[tuple[str, str]] = set()
        self.made: list[tuple[str, str]] = []  # removed again every few points
        self.networks: set[str] = set()  # every network name tried (their bridges' names)

    def stack_file(self, revision: int, replicas: int) -> str:
        path = self.work / f"stack-{revision}-{replicas}.yaml"
        path.write_text(STACK.format(revision=revision, replicas=replicas))
        return str(path)

    def operation(self, kind: str) -> Operation:
        self.counter += 1
        n = self.counter
        if kind == "create":
            argv = ["create", "--name", f"c{n}", "busybox", "sleep", "100000"]
            return Operation(kind, [argv], ("container", f"c{n}"))
        if kind == "start":
            argv = ["run", "-d", "--name", f"r{n}", "busybox", "sleep", "100000"]
            return Operation(kind, [argv], ("container", f"r{n}"))
        if kind == "apply":
            argv = ["apply", "-f", self.stack_file(n, 1), "-n", f"s{n}"]
            self.networks.add(f"s{n}_default")
            return Operation(kind, [argv], ("stack", f"s{n}"))
        if kind == "scale":
            return Operation(kind, [["service", "scale", f"base_web={1 + n % 3}"]], None)
        if kind == "rollout":
            apply = ["apply", "-f", self.stack_file(n, 2), "-n", "base"]
            status = ["rollout", "status", "base_web", "--timeout", "60"]
            return Operation(kind, [apply, status], ("stack", "base"))
        if kind == "import":
            argv = ["import", str(self.busybox_tar), f"imp{n}"]
            return Operation(kind, [argv], ("image", f"imp{n}"))
        if kind == "build":
            context = self.work / f"ctx{n}"
            context.mkdir()
            (context / "Dockerfile").write_text(f"FROM busybox\nRUN echo {n} > /point\n")
            argv = ["build", "-t", f"b{n}", str(context)]
            return Operation(kind, [argv], ("image", f"b{n}"))
        if kind == "network":
            self.networks.add(f"n{n}")
            return Operation(kind, [["network", "create", f"n{n}"]], ("network", f"n{n}"))
        raise AssertionError(kind)

    def json(self, *argv: str) -> Any:
        result = self.daemon.client("--format", "json", *argv, timeout=60)
        assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr}"
        text = result.stdout.strip()
        if text.startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]  # ps: NDJSON

    def problems(self) -> list[str]:
        """What disagrees between the daemon's records, its listings and the host."""
        daemon = self.daemon
        found: list[str] = []
        rows = self.json("ps", "-a")
        listed = {row["id"]: row for row in rows}
        names = Counter(row["name"] for row in rows)
        found += [f"container name {n} listed {c} times" for n, c in names.items() if c > 1]
        records = {p.name for p in (daemon.root / "containers").glob("*") if len(p.name) == 64}
        runtime = {p.name for p in (daemon.run_root / "runtime").glob("*") if len(p.name) == 64}
        for unlisted in sorted(records - set(listed)):
            holds = sorted(p.name for p in (daemon.root / "containers" / unlisted).iterdir())
            found.append(f"container directory {unlisted} (holding {holds}) has no record")
        found += [f"ps lists {i} with no record" for i in sorted(set(listed) - records)]
        found += [
            f"runtime state {i} of no listed container" for i in sorted(runtime - set(listed))
        ]
        for container_id in sorted(records | runtime):
            live = any(
                (d / "cgroup.procs").exists() and (d / "cgroup.procs").read_text().strip()
                for d in cgroup_dirs(container_id)
            )
            state = listed.get(container_id, {}).get("state")
            # a created container's init waits in its cgroup for `start`
            if live and state not in ("created", "running", "paused", "restarting"):
                found.append(f"{container_id[:12]} has processes but is listed {state}")
            if state == "running" and not live:
                found.append(f"{container_id[:12]} is listed running but has no processes")
        pid = daemon.process.pid if daemon.process else -1
        for process in processes_mentioning(daemon.workdir):
            if process.startswith(f"process {pid}:") or " --host unix://" in process:
                continue
            ids = set(HEX64.findall(process))
            if ids and not ids & set(listed):
                found.append(f"a process of no listed container: {process}")
        for point in _mount_points_under(daemon.workdir):
            ids = set(HEX64.findall(point))
            if ids and not ids & set(listed):
                found.append(f"mount {point} of no listed container")
        for service in self.json("service", "ls"):  # a replica lost or one too many
            if int(service["running"]) != int(service["desired"]):
                found.append(
                    f"service {service['stack']}_{service['name']}: {service['running']} "
                    f"running of {service['desired']} desired"
                )
        found += self.network_problems(listed)
        found += self.layer_problems()
        found += self.promise_problems(rows)
        return found

    def network_problems(self, listed: dict[str, Any]) -> list[str]:
        found: list[str] = []
        networks = self.json("network", "ls")
        addresses: set[str] = set()
        for network in networks:
            bridge = network.get("bridge")
            if not bridge:
                continue
            # attached and holding a network namespace: running, or created when a kill came
            # between its network setup and its start (the records say attached, so a port)
            running = [
                c for c in network.get("containers", [])
                if listed.get(c["container_id"], {}).get("state") in LIVE
            ]  # fmt: skip
            if not link_exists(bridge):
                if running:  # the bridge is made for the first container that needs it
                    found.append(f"network {network['name']}: its bridge {bridge} is missing")
                continue
            ports = bridge_ports(bridge)
            if len(ports) != len(running):
                found.append(
                    f"network {network['name']}: bridge {bridge} has ports {ports} for "
                    f"{len(running)} attached live containers (attached: "
                    + ", ".join(
                        f"{c['name']} {listed.get(c['container_id'], {}).get('state')}"
                        for c in network.get("containers", [])
                    )
                    + "; ps: "
                    + ", ".join(f"{r['name']} {r['state']}" for r in listed.values())
                    + ")"
                )
            addresses |= {c["ip_address"] for c in network.get("containers", [])}
            addresses |= {network.get("gateway", "")}
            for c in network.get("containers", []):
                if c["container_id"] not in listed:
                    found.append(f"network {network['name']} lists unknown {c['container_id']}")
        names = {n["name"] for n in networks}
        for tried in sorted(self.networks - names):  # a network create or apply cut short
            if link_exists(bridge_name(self.daemon.root, tried)):
                found.append(f"bridge {bridge_name(self.daemon.root, tried)} of no network")
        stacks = {s["name"] for s in self.json("stack", "ls")}
        for network in networks:
            owner = network.get("labels", {}).get("com.carte.stack")
            if owner and owner not in stacks:
                found.append(f"network {network['name']} of stack {owner}, which is not listed")
        table = nft_table_name(self.daemon.root)
        rules = subprocess.run(
            ["nft", "list", "table", "ip", table], capture_output=True, text=True
        )
        if rules.returncode != 0:
            found.append(f"nft table {table} is missing: {rules.stderr.strip()}")
        subnets = [n["subnet"].rsplit(".", 2)[0] + "." for n in networks if n.get("subnet")]
        for address in set(re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", rules.stdout)):
            in_a_network = any(address.startswith(prefix) for prefix in subnets)
            if in_a_network and address not in addresses and not address.endswith(".0"):
                found.append(f"nft table {table} names {address}, no listed container's")
        return found

    def layer_problems(self) -> list[str]:
        found: list[str] = []
        store = ImageStore(self.daemon.root)
        for entry in sorted(store.layers_dir.iterdir()):
            if entry.name.startswith(UNPACK_PREFIX):
                found.append(f"half-unpacked layer {entry.name} left after the restart")
            elif entry.is_dir() and not (entry / DONE_MARKER).is_file():
                found.append(f"layer {entry.name} has no {DONE_MARKER} marker")
        for image in self.json("images"):
            try:
                stored = store.get(image["id"])
                manifest = decode_manifest(store.blob_path(stored.manifest_digest).read_bytes())
            except Exception as error:
                found.append(f"image {image['id']} listed but unreadable: {error}")
                continue
            for blob in (manifest.config, *manifest.layers):
                if not store.has_blob(blob.digest):
                    found.append(f"image {image['repository']} lists missing blob {blob.digest}")
        return found

    def promise_problems(self, rows: list[dict[str, Any]]) -> list[str]:
        have: dict[str, set[str]] = {
            "container": {row["name"] for row in rows},
            "stack": {s["name"] for s in self.json("stack", "ls")},
            "image": {i["repository"] for i in self.json("images")},
            "network": {n["name"] for n in self.json("network", "ls")},
        }
        return [
            f"{kind} {name} was made before the kill and is gone"
            for kind, name in sorted(self.promised)
            if name not in have[kind]
        ]

    def forget_made(self) -> None:
        """Remove what the last points made (keeps the machine's load flat over 200 points)."""
        for kind, name in self.made:
            argv = {
                "container": ["rm", "-f", name],
                "stack": ["stack", "rm", name],
                "image": ["rmi", "-f", name],
                "network": ["network", "rm", name],
            }[kind]
            self.daemon.client(*argv, timeout=60)
            self.promised.discard((kind, name))
        self.made.clear()


LIVE = ("created", "running", "paused", "restarting")
KINDS = ["create", "start", "apply", "scale", "rollout", "import", "build", "network"]
KEEP_GOING = bool(os.environ.get("CARTE_CRASH_KEEP_GOING"))
"""Go on after a point that found problems and list them all at the end (the full run)."""
ONLY = (
    os.environ.get("CARTE_CRASH_KINDS", "").split(",")
    if os.environ.get("CARTE_CRASH_KINDS")
    else []
)


def measure(harness: Harness) -> dict[str, float]:
    """Each operation once without a kill: its duration bounds the kill delays."""
    durations = {}
    for kind in KINDS:
        operation = harness.operation(kind)
        started = time.monotonic()
        operation.start(harness.daemon)
        operation.join()
        durations[kind] = time.monotonic() - started
        assert operation.succeeded, f"{kind} failed without a kill: {operation.codes}"
        if operation.promise and operation.promise[1] != "base":
            harness.made.append(operation.promise)
    harness.forget_made()
    return durations


def wait_for(condition: Callable[[], list[str]], timeout: float) -> list[str]:
    """The problems once they are gone, or the last ones after `timeout` (the daemon repairs
    some of what a kill left in its first seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


# Crash-consistency bugs this harness found that are still open (issue 11's crash section):
# a point that shows only these is recorded and the test ends as an expected failure naming
# them; any other problem fails it. Add a pattern (re.compile(r"^...$")) for a bug found and
# not fixed yet; remove it once the bug is fixed. The three found first are fixed, each with a
# regression test in test_crash_hardening.py: a service under its count after a kill during
# a build or a scale, a stack's network left by a kill early in an apply, a container
# directory with no record left by a kill early in run -d.
KNOWN_OPEN: tuple[re.Pattern[str], ...] = ()


def known_open(problem: str) -> bool:
    return any(pattern.match(problem) for pattern in KNOWN_OPEN)


@pytest.mark.timeout(300 + POINTS * 45)  # a point takes 5 s, one with problems up to 35 s
def test_sigkill_at_random_points_leaves_records_and_host_agreeing(
    daemons: DaemonFactory, busybox_tar: Path, tmp_path: Path
) -> None:
    daemon = daemons()
    rng = random.Random(SEED)
    harness = Harness(daemon, busybox_tar, tmp_path)
    log: list[str] = []
    findings: list[str] = []  # with CARTE_CRASH_KEEP_GOING: every point's new problems
    open_bugs: list[str] = []  # points that showed only KNOWN_OPEN problems
    seen: set[str] = set()
    try:
        assert daemon.client("import", str(busybox_tar), "busybox").returncode == 0
        base = daemon.client("apply", "-f", harness.stack_file(0, 2), "-n", "base", timeout=120)
        assert base.returncode == 0, base.stderr
        harness.promised.add(("stack", "base"))
        durations = measure(harness)
        log.append(f"measured: {durations}")
        print(log[-1], flush=True)
        for point in range(POINTS):
            kind = rng.choice(ONLY or KINDS)
            delay = rng.uniform(0.0, durations[kind] * 1.1)
            where = f"seed {SEED} point {point}: SIGKILL {delay:.2f} s into {kind}"
            operation = harness.operation(kind)
            operation.start(daemon)
            time.sleep(delay)
            assert daemon.process is not None
            daemon.process.kill()
            daemon.process.wait()
            operation.join()
            log.append(f"{where} (client exits {operation.codes})")
            print(log[-1], flush=True)  # with -s, a long run shows its progress
            if operation.promise and operation.succeeded:
                harness.promised.add(operation.promise)
            if operation.promise and operation.promise[1] != "base":
                harness.made.append(operation.promise)
            daemon.start()
            found = wait_for(lambda: [p for p in harness.problems() if p not in seen], 30)
            known = [problem for problem in found if known_open(problem)]
            if known:
                seen.update(known)
                open_bugs.append(f"{where}: " + "; ".join(known))
                print(f"KNOWN OPEN {open_bugs[-1]}", flush=True)
                found = [problem for problem in found if problem not in known]
            if found and KEEP_GOING:
                seen.update(found)
                findings.append(f"{where}:\n  " + "\n  ".join(found))
                print(f"PROBLEMS {findings[-1]}", flush=True)
                continue
            assert not found, f"{where}:\n" + "\n".join(found) + "\n\n" + "\n".join(log[-5:])
            if point % 4 == 3:
                harness.forget_made()
        assert not findings, f"seed {SEED}, {POINTS} points:\n" + "\n".join(findings)
        # After all the kills, emptying the daemon and stopping it leaves nothing on the host.
        bridges = empty(daemon, stacks=True, volumes=True, networks=True)
        daemon.stop()
        left = host_leftovers(daemon, bridges)
        assert not left, f"seed {SEED}: left on the host after a graceful stop: {left}"
        if open_bugs:
            pytest.xfail("known open crash-consistency bugs:\n" + "\n".join(open_bugs))
    finally:
        if alive(daemon):
            empty(daemon, stacks=True, volumes=True, networks=True)
            daemon.stop()
        remove_leftovers(daemon)
