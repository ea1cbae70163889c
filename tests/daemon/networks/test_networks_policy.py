"""Network policies, --internal and egress, through the CLI with real nftables rules."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from networks_lab import fails, fetch_from, host_fetch, network, ok, serve_http, wait_until
from support.containers import run_detached
from support.daemon import Daemon


def test_a_policy_allows_exactly_what_it_says(carte: Daemon) -> None:
    ok(carte.client("network", "create", "n1pol"))
    db = run_detached(
        carte,
        "--name",
        "db",
        "--label",
        "app=db",
        "--network",
        "n1pol",
        "busybox",
        "sh",
        "-c",
        "httpd -p 5432 -h /etc; exec httpd -f -p 80 -h /etc",
    )
    db_ip = network(carte, "n1pol")["containers"][0]["ip_address"]
    wait_until(lambda: host_fetch(db_ip, 5432) != "" and host_fetch(db_ip, 80) != "")
    other = serve_http(carte, "other", "--label", "app=other", "--network", "n1pol")
    web = ("--label", "app=web", "--network", "n1pol")
    before = fetch_from(carte, "db", *web)
    assert before.endswith(db[:12] + "\n")  # no policy yet: everything flows

    policy_id = ok(
        carte.client(
            "network",
            "policy",
            "add",
            "n1pol",
            "--from",
            "app=web",
            "--to",
            "app=db",
            "--port",
            "5432/tcp",
        )
    ).strip()
    assert fetch_from(carte, "db", *web, port=5432).endswith(db[:12] + "\n")
    assert fetch_from(carte, "db", *web, port=80) == ""
    assert fetch_from(carte, "other", *web) == ""
    assert fetch_from(carte, "db", "--label", "app=other", "--network", "n1pol", port=5432) == ""
    details = network(carte, "n1pol")
    assert details["denied_packets"] > 0
    assert [p["id"] for p in details["policies"]] == [policy_id]
    listed = ok(carte.client("network", "policy", "ls", "n1pol"))
    assert policy_id in listed and "5432/tcp" in listed

    ok(carte.client("network", "policy", "rm", "n1pol", policy_id))
    assert fetch_from(carte, "other", *web).endswith(other[:12] + "\n")


def test_policy_input_errors_are_one_line(carte: Daemon) -> None:
    ok(carte.client("network", "create", "n1polbad"))
    assert "webonly" in fails(
        carte.client("network", "policy", "add", "n1polbad", "--from", "webonly", "--to", "a=b")
    )
    assert "54x" in fails(
        carte.client(
            "network", "policy", "add", "n1polbad", "--from", "a=b", "--to", "c=d", "--port", "54x"
        )
    )
    assert "nosuch" in fails(carte.client("network", "policy", "rm", "n1polbad", "nosuch"))


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def outside() -> Iterator[str]:
    """A namespace standing in for "the outside": reachable only through the host's routing,
    with an HTTP server on 10.213.x.2:8080 (its own veth pair, not a Carte bridge)."""
    tag = secrets.token_hex(3)
    netns, host_end = f"n1out{tag}", f"n1o{tag}"
    third = int(tag[:2], 16)
    www = Path(f"/tmp/{netns}")
    www.mkdir()
    (www / "hostname").write_text("outside\n")
    server = None
    try:
        run("ip", "netns", "add", netns)
        run("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", netns)
        run("ip", "addr", "add", f"10.213.{third}.1/30", "dev", host_end)
        run("ip", "link", "set", host_end, "up")
        run("ip", "-n", netns, "addr", "add", f"10.213.{third}.2/30", "dev", "eth0")
        run("ip", "-n", netns, "link", "set", "eth0", "up")
        run("ip", "-n", netns, "link", "set", "lo", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", netns, "busybox", "httpd", "-f", "-p", "8080", "-h", str(www)]
        )
        yield f"10.213.{third}.2"
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        for path in www.iterdir():
            path.unlink()
        www.rmdir()


def test_internal_network_has_no_egress_and_others_are_masqueraded(
    carte: Daemon, outside: str
) -> None:
    ok(carte.client("network", "create", "n1open"))
    ok(carte.client("network", "create", "--internal", "n1closed"))
    assert fetch_from(carte, outside, "--network", "n1open", port=8080).endswith("outside\n")
    assert fetch_from(carte, outside, port=8080).endswith("outside\n")  # default network
    assert fetch_from(carte, outside, "--network", "n1closed", port=8080) == ""
    web = serve_http(carte, "inside", "--network", "n1closed")
    assert fetch_from(carte, "inside", "--network", "n1closed").endswith(web[:12] + "\n")


def test_denied_packets_can_be_logged(busybox_tar: Path) -> None:
    """With network.log_denied the policy's drop rule logs with Carte's prefix (kernel log)."""
    from networks_lab import network_config, nft_table, remove_everything
    from support.daemon import DaemonFactory

    from carte.handlers.network._records import nft_table_name

    factory = DaemonFactory()
    try:
        daemon = factory(config=network_config(pool="10.76.0.0/16:24") + "  log_denied: true\n")
        ok(daemon.client("network", "create", "n1audit"))
        ok(daemon.client("network", "policy", "add", "n1audit", "--from", "a=b", "--to", "c=d"))
        table = nft_table(nft_table_name(daemon.root)) or ""
        assert 'log prefix "carte-denied "' in table
        remove_everything(daemon)
        daemon.stop()
        assert nft_table(nft_table_name(daemon.root)) is None
    finally:
        factory.cleanup()
