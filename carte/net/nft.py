"""Applying Carte's nftables table with the `nft` command, and reading it back.

Only ``table ip <name>`` is ever created, replaced or deleted; other tables are not read or
written. `apply` rebuilds the whole table from the desired state in one ``nft -f -``
transaction, carrying the denied-packet counters over; with no networks left it deletes the
table. Failures raise `Unavailable` (no nft binary) or `Internal` (nft refused the script,
with nft's first error line); a refused transaction changes nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, replace
from typing import Any

from carte.api.errors import Internal, Unavailable
from carte.net.rules import Ruleset, denied_counter_name, render, render_delete


@dataclass(frozen=True)
class DeniedCount:
    packets: int
    bytes: int


def _nft(args: list[str], script: str | None = None) -> str:
    binary = shutil.which("nft")
    if binary is None:
        raise Unavailable("the nft command is not installed; install nftables")
    done = subprocess.run(
        [binary, *args], input=script, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        first = next((ln for ln in done.stderr.splitlines() if ln.strip()), "unknown error")
        raise Internal(f"nft {' '.join(args)} failed: {first.strip()}")
    return done.stdout


def list_table(table: str) -> dict[str, Any] | None:
    """``nft -j list table ip <table>`` parsed, or None when the table does not exist."""
    try:
        out = _nft(["-j", "list", "table", "ip", table])
    except Internal as exc:
        if "No such file or directory" in exc.message:
            return None
        raise
    parsed: dict[str, Any] = json.loads(out)
    return parsed


def denied_counts(table: str) -> dict[str, DeniedCount]:
    """The denied-packet counters of every network with a policy, keyed by bridge name."""
    listing = list_table(table)
    counts: dict[str, DeniedCount] = {}
    prefix = denied_counter_name("")
    for item in (listing or {}).get("nftables", []):
        counter = item.get("counter")
        if counter and counter["name"].startswith(prefix):
            bridge = counter["name"][len(prefix) :]
            counts[bridge] = DeniedCount(packets=counter["packets"], bytes=counter["bytes"])
    return counts


def apply(ruleset: Ruleset) -> None:
    """Make table ``ip <ruleset.table>`` exactly `ruleset`; delete it when there are no networks.

    Idempotent: applying the same state twice yields the same table. Counters of denied
    packets survive the rebuild (packets counted between reading and replacing are lost).
    """
    if not ruleset.networks:
        delete(ruleset.table)
        return
    carried = {
        bridge: (count.packets, count.bytes)
        for bridge, count in denied_counts(ruleset.table).items()
    }
    _nft(["-f", "-"], render(replace(ruleset, denied_counts=carried)))


def delete(table: str) -> None:
    """Remove table ``ip <table>`` if it exists."""
    _nft(["-f", "-"], render_delete(table))


def forward_drop_chains() -> list[str]:
    """Other programs' base chains that drop forwarded IPv4 traffic by default.

    Read only, so the daemon can warn: a packet must be accepted by every base chain on a
    hook, so such a chain (Docker sets ``iptables -P FORWARD DROP``) drops containers'
    traffic whatever Carte's table says, until its owner allows Carte's bridges.
    Returns ``"family table chain"`` strings.
    """
    listing: dict[str, Any] = json.loads(_nft(["-j", "list", "chains"]))
    found = []
    for item in listing.get("nftables", []):
        chain = item.get("chain")
        if (
            chain
            and chain.get("hook") == "forward"
            and chain.get("policy") == "drop"
            and chain["family"] in ("ip", "inet", "bridge")
        ):
            found.append(f"{chain['family']} {chain['table']} {chain['name']}")
    return found


def check(ruleset: Ruleset) -> None:
    """Ask nft to parse and validate the script for `ruleset` without changing anything."""
    _nft(["-c", "-f", "-"], render(ruleset))
