"""Run inside a VM booted with Debian's kernel (which has WireGuard): a two-node Carte cluster
whose nodes are network namespaces on one LAN bridge, each with its own `carte daemon`, and a
real etcd for the control plane (tests/support/cluster.py, as the host's cluster tests).

Node 1 creates network ``sec`` with ``encrypted: true``; node 2 creates it plainly and gets
it encrypted (the cluster's record wins). An httpd on node 2 serves a known payload; a
container on node 1 fetches it over the overlay every second while a raw socket captures every
frame node 1 puts on the LAN. The same fetch on an unencrypted network is the control: its
payload must show on the LAN, else the capture proves nothing. Then ``carte network
rotate-keys``: both nodes get new keys and traffic flows again, still encrypted. Prints one
line ``CARTE_ENC_VERDICT {json}``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

os.environ["CARTE_TEST_SLOWDOWN"] = "8"  # QEMU without KVM
TESTS = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(TESTS), str(TESTS / "library" / "net")]

PAYLOAD = "CARTE-ENCRYPTED-OVERLAY-MARKER-5d1e"
SERVE = (
    f"mkdir -p /www && echo {PAYLOAD}-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"
)


def main() -> None:
    fresh_tmp()
    import wireguard_guest_check as wire
    from support.busybox import make_rootfs_tar
    from support.cluster import WorkloadLab

    from carte.net import wireguard

    verdict: dict[str, Any] = {
        "kernel": platform.release(),
        "support": wireguard.encryption_support().__dict__,
    }
    work = Path("/tmp/enc-work")
    work.mkdir()
    image = make_rootfs_tar(work / "busybox.tar", work)
    extra = 'overlay: {vnis: "6000-6009"}\n'
    lab = WorkloadLab(2, pool="10.73.0.0/16:24", node_ttl=20, leader_ttl=20, extra=extra)
    try:
        with lab:
            try:
                form_quickly(lab, image)
                verdict.update(scenario(lab, wire))
            finally:
                lab.empty_and_stop()
    except Exception:  # the verdict says what failed; the test asserts on it
        verdict["error"] = traceback.format_exc()[-3000:]
    print("CARTE_ENC_VERDICT " + json.dumps(verdict), flush=True)


def fresh_tmp() -> None:
    """A tmpfs on /tmp: the guest's /tmp is an overlay, which cannot hold containers' overlay
    upper directories. A checkout or virtualenv under /tmp (a CI clone) is bound back at its
    path first, so this code and its interpreter stay where they were."""
    keep = [p for p in {TESTS.parent, Path(sys.prefix).resolve()} if p.is_relative_to("/tmp")]
    keep = [p for p in keep if not any(p != q and p.is_relative_to(q) for q in keep)]
    for at, path in enumerate(keep):
        Path(f"/run/keep{at}").mkdir()
        subprocess.run(["mount", "--bind", str(path), f"/run/keep{at}"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700m", "tmpfs", "/tmp"], check=True)
    for at, path in enumerate(keep):
        path.mkdir(parents=True)
        subprocess.run(["mount", "--bind", f"/run/keep{at}", str(path)], check=True)


def form_quickly(lab: Any, image: Path) -> None:
    """`WorkloadLab.formed`'s steps, with both daemons starting (and importing busybox) at
    once: a daemon's start takes minutes under emulation."""
    control, worker = lab.nodes
    for node in lab.nodes:
        config = lab.config(node, control=node is control)
        daemon = lab.factory(config=config, command=lab.command(node), start=False)
        node.daemons.append(daemon)
        daemon.start(wait=False)
    for node in lab.nodes:
        node.daemon.wait_ready()
    lab.init(control)
    lab.join(worker)
    imports = [
        subprocess.Popen([*lab.command(node), "-H", f"unix://{node.daemon.socket}", "import",
                          str(image), "busybox:latest"], stdout=subprocess.DEVNULL)
        for node in lab.nodes
    ]  # fmt: skip
    assert [p.wait(timeout=900) for p in imports] == [0, 0], "busybox imported on both nodes"


def scenario(lab: Any, wire: Any) -> dict[str, Any]:
    """Commands go to the daemons' sockets from this process (a client start costs seconds
    under emulation); the CLI only where a user's flow needs it (run -d, rotate-keys)."""
    node1, node2 = lab.nodes
    found: dict[str, Any] = {}
    command(node1, "CreateNetwork", name="sec", options={"encrypted": "true"})
    command(node2, "CreateNetwork", name="sec")
    for node in lab.nodes:
        command(node, "CreateNetwork", name="clear")
    found["encrypted_on_node2"] = command(node2, "InspectNetwork", name="sec")["encrypted"]
    found["clear_encrypted"] = command(node2, "InspectNetwork", name="clear")["encrypted"]
    web = serve(lab, node2, "websec", "sec")
    plain_web = serve(lab, node2, "webclear", "clear")
    out = Path("/tmp/enc-out")
    probe(lab, node1, "clear", plain_web, out / "clear")
    found["plain"] = captured(lab, wire, out / "clear")
    command(node1, "RemoveContainer", ref="probe-clear", force=True)  # only sec's traffic now
    probe(lab, node1, "sec", web, out / "sec")
    found["encrypted"] = captured(lab, wire, out / "sec")
    found["mtu"] = (out / "sec" / "mtu").read_text().strip()
    before = public_keys(lab)
    rotated = lab.carte(node1, "network", "rotate-keys", check=False)
    found["rotate"] = {"code": rotated.returncode, "out": rotated.stdout, "err": rotated.stderr}
    found["keys_changed"] = [before[n] != k for n, k in public_keys(lab).items()]
    found["after_rotation"] = captured(lab, wire, out / "sec")
    for node in lab.nodes:
        for container in node.daemon.client("ps", "-aq", "--no-trunc").stdout.split():
            command(node, "RemoveContainer", ref=container, force=True)
        for network in ("sec", "clear"):
            command(node, "RemoveNetwork", name=network)
    found["tunnels_left"] = [tunnel_links(node) for node in lab.nodes]
    return found


def command(node: Any, kind: str, /, **fields: Any) -> Any:
    reply = node.daemon.request("POST", f"/v1/commands/{kind}", fields)
    assert reply.status < 300, (node.name, kind, reply.status, reply.body[:800])
    return reply.json().get("result") if reply.body else None


def serve(lab: Any, node: Any, name: str, network: str) -> str:
    lab.carte(node, "run", "-d", "--name", name, "--hostname", name, "--network", network,
              "busybox:latest", "sh", "-c", SERVE)  # fmt: skip
    members = command(node, "InspectNetwork", name=network)["containers"]
    return str(next(m["ip_address"] for m in members if m["name"] == name))


def probe(lab: Any, node: Any, network: str, address: str, out: Path) -> None:
    """A container on ``network`` at ``node`` that writes its MTU and then, every second, the
    answer of GET / from ``address`` into ``out`` (a bind mount)."""
    out.mkdir(parents=True)
    get = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {address} 80"
    loop = (
        "cat /sys/class/net/eth0/mtu > /out/mtu; "
        f"while true; do {get} > /out/next; mv /out/next /out/answer; sleep 1; done"
    )
    lab.carte(node, "run", "-d", "--name", f"probe-{network}", "--network", network,
              "-v", f"{out}:/out", "busybox:latest", "sh", "-c", loop)  # fmt: skip


def captured(lab: Any, wire: Any, out: Path, timeout: float = 120) -> dict[str, Any]:
    """Node 1's LAN port captured from now until a fresh answer of the probe writing to
    ``out`` holds the payload (or ``timeout`` s), and 2 s more."""
    frames: list[bytes] = []
    stop = threading.Event()
    catcher = threading.Thread(target=wire.capture, args=(f"{lab.name}h1", frames, stop))
    catcher.start()
    answer = out / "answer"
    answer.unlink(missing_ok=True)
    deadline, received = time.monotonic() + timeout, False
    try:
        while not received and time.monotonic() < deadline:
            time.sleep(0.5)
            received = answer.exists() and PAYLOAD in answer.read_text(errors="replace")
        time.sleep(2)
    finally:
        stop.set()
        catcher.join()

    return {
        "received": received,
        "frames": len(frames),
        "plaintext_on_lan": any(PAYLOAD.encode() in f for f in frames),
        "vxlan_in_clear": wire.udp_frames(frames, 4789),
        "wireguard_frames": wire.udp_frames(frames, 51820),
    }


def public_keys(lab: Any) -> dict[str, str]:
    keys = {}
    for node in lab.nodes:
        shown = subprocess.run(
            ["ip", "netns", "exec", node.namespace, "wg", "show", "all", "public-key"],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        keys[node.name] = shown.split()[-1] if shown.split() else ""
    return keys


def tunnel_links(node: Any) -> list[str]:
    shown = subprocess.run(
        ["ip", "-n", node.namespace, "-o", "link", "show", "type", "wireguard"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return [line.split(":")[1].strip() for line in shown.splitlines()]


if __name__ == "__main__":
    main()
