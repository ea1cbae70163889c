"""A bounded load generator for the game: a few worker threads, each owning its own players,
send POST /score (3 of 4 requests) and GET /score (1 of 4) to the published port on 127.0.0.1,
one new connection per request, at most `rate` requests a second in all, until stopped or
`seconds` have passed. Every write answered 200 is appended to the ledger (JSON lines) at
once: the ledger is the list of promises check.py holds the server to.

  python3 load.py --port 8000 --seconds 30 --ledger ledger.jsonl [--workers 8] [--rate 200]

Used as a library by the operational test and the benchmark: `Load(...).start()`, `.stop()`,
then `summary(load.results, since, until)` for a phase.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

SHARDS = 4
TIMEOUT = 3.0


def shard_of(player: str) -> int:
    """The shard (0-based) owning `player`: the same rule as web/app.py."""
    return zlib.crc32(player.encode()) % SHARDS


@dataclass(frozen=True)
class Result:
    started: float  # time.monotonic()
    ended: float
    kind: str  # "write" or "read"
    player: str
    ok: bool
    error: str  # "" when ok; else the HTTP status and body, or the connection error


class Load:
    """`workers` threads of sequential requests; thread-safe `results`, the ledger file."""

    def __init__(
        self,
        port: int | Sequence[int],
        ledger: Path,
        *,
        host: str = "127.0.0.1",
        workers: int = 8,
        players_per_worker: int = 16,
        rate: float = 0.0,
        seconds: float = 3600.0,
        prefix: str = "p",
    ) -> None:
        # Several ports (one per replica, as plain `docker run -p` gives) take turns.
        self.ports = [port] if isinstance(port, int) else list(port)
        self.host, self.workers, self.rate = host, workers, rate
        self.players_per_worker, self.seconds, self.prefix = players_per_worker, seconds, prefix
        self.results: list[Result] = []
        self._ledger: IO[str] = ledger.open("a")
        self._ledger_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._turn = 0

    def start(self) -> Load:
        deadline = time.monotonic() + self.seconds
        for worker in range(self.workers):
            players = [f"{self.prefix}{worker}-{n}" for n in range(self.players_per_worker)]
            thread = threading.Thread(target=self._run, args=(players, deadline), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._ledger.close()

    def wait(self) -> None:
        for thread in self._threads:
            thread.join()
        self._ledger.close()

    def _run(self, players: list[str], deadline: float) -> None:
        rounds = dict.fromkeys(players, 0)
        interval = self.workers / self.rate if self.rate else 0.0
        turn = 0
        next_at = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < deadline:
            player = players[turn % len(players)]
            if turn % 4 == 3:
                self._read(player)
            else:
                rounds[player] += 1
                self._write(player, rounds[player], (turn * 7919) % 100_000)
            turn += 1
            if interval:
                next_at += interval
                pause = next_at - time.monotonic()
                if pause > 0:
                    self._stop.wait(pause)
                else:
                    next_at = time.monotonic()

    def _write(self, player: str, round_: int, score: int) -> None:
        body = json.dumps({"player": player, "round": round_, "score": score})
        started = time.monotonic()
        error = self._request("POST", "/score", body)
        ended = time.monotonic()
        self.results.append(Result(started, ended, "write", player, not error, error))
        if not error:
            line = json.dumps({"player": player, "round": round_, "score": score})
            with self._ledger_lock:
                self._ledger.write(line + "\n")
                self._ledger.flush()

    def _read(self, player: str) -> None:
        started = time.monotonic()
        error = self._request("GET", f"/score?player={player}", None)
        self.results.append(Result(started, time.monotonic(), "read", player, not error, error))

    def _request(self, method: str, path: str, body: str | None) -> str:
        """'' when answered 200; else what went wrong, in one line."""
        port = self.ports[self._turn % len(self.ports)]
        self._turn += 1
        connection = http.client.HTTPConnection(self.host, port, timeout=TIMEOUT)
        headers = {"Connection": "close", "Content-Type": "application/json"}
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                return f"HTTP {response.status}: {data[:200].decode(errors='replace')}"
            return ""
        except (OSError, http.client.HTTPException) as error:
            return f"{type(error).__name__}: {error}"
        finally:
            connection.close()


def summary(
    results: list[Result], since: float = 0.0, until: float = float("inf")
) -> dict[str, Any]:
    """Requests started in [since, until): how many, failed, per second, failures by shard."""
    chosen = [r for r in list(results) if since <= r.started < until]
    failed = [r for r in chosen if not r.ok]
    span = (max(r.ended for r in chosen) - min(r.started for r in chosen)) if chosen else 0.0
    by_shard: dict[int, int] = {}
    for result in failed:
        by_shard[shard_of(result.player)] = by_shard.get(shard_of(result.player), 0) + 1
    return {
        "requests": len(chosen),
        "failed": len(failed),
        "requests_per_second": round(len(chosen) / span, 1) if span else 0.0,
        "failed_by_shard": by_shard,
        "errors": sorted({r.error for r in failed})[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, nargs="+", default=[8000], help="one or more")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s in all (0: no cap)")
    parser.add_argument("--ledger", type=Path, default=Path("ledger.jsonl"))
    args = parser.parse_args()
    load = Load(
        args.port,
        args.ledger,
        host=args.host,
        workers=args.workers,
        rate=args.rate,
        seconds=args.seconds,
    ).start()
    try:
        load.wait()
    except KeyboardInterrupt:
        load.stop()
    print(json.dumps(summary(load.results)))


if __name__ == "__main__":
    main()
