"""A daemon restarted over containers on a user network that died while no daemon ran comes
back at once: settling their exits does not wait for the network handler, which starts after
the containers handler (it used to cost DETACH_GRACE, 10 s, per container)."""

from __future__ import annotations

import json
import os
import signal
import time

from support.containers import inspect, ok, run_detached, wait_for
from support.daemon import Daemon

DEAD = 3


def test_restart_over_dead_containers_on_a_user_network_is_quick(carte: Daemon) -> None:
    ok(carte.client("network", "create", "adoptnet"))
    loop = "while true; do sleep 0.1; done"
    ids = [
        run_detached(
            carte, "--name", f"dead{n}", "--network", "adoptnet", "busybox", "sh", "-c", loop
        )
        for n in range(DEAD)
    ]
    pids = [inspect(carte, container_id)["state"]["pid"] for container_id in ids]
    carte.stop(signal.SIGKILL)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for container_id in ids:
        exit_file = carte.run_root / "runtime" / container_id / "exit.json"
        wait_for(exit_file.exists, what=f"exit.json of {container_id[:12]}")

    began = time.monotonic()
    carte.start()
    took = time.monotonic() - began
    print(f"restart with {DEAD} dead containers on a user network: {took:.2f}s")

    assert took < 5.0, f"the restart took {took:.1f}s with {DEAD} dead containers"
    for container_id in ids:
        state = inspect(carte, container_id)["state"]
        assert state["status"] == "exited" and state["exit_code"] == 137
    members = json.loads(ok(carte.client("network", "inspect", "adoptnet")))[0]["containers"]
    assert not members, f"dead containers still hold addresses: {members}"
    # The network is still usable: a new container gets an address on it and runs.
    ok(carte.client("run", "--rm", "--network", "adoptnet", "busybox", "true"))
    ok(carte.client("rm", *ids))
    ok(carte.client("network", "rm", "adoptnet"))
