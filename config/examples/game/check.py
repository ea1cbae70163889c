"""Check the game kept its promises: every write in the ledger load.py wrote (each answered
200) must be readable through the web tier with the same score. Each player is read once
(retried a few times if the read itself fails); exits 1 listing what is missing.

  python3 check.py --port 8000 ledger.jsonl
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from pathlib import Path

ATTEMPTS = 5


def read_player(host: str, port: int, player: str) -> dict[str, int]:
    """The player's stored rounds; raises RuntimeError after ATTEMPTS failed reads."""
    last = ""
    for _ in range(ATTEMPTS):
        connection = http.client.HTTPConnection(host, port, timeout=5)
        try:
            connection.request("GET", f"/score?player={player}", headers={"Connection": "close"})
            response = connection.getresponse()
            data = response.read()
            if response.status == 200:
                rounds: dict[str, int] = json.loads(data)["rounds"]
                return rounds
            last = f"HTTP {response.status}: {data[:200].decode(errors='replace')}"
        except (OSError, http.client.HTTPException) as error:
            last = f"{type(error).__name__}: {error}"
        finally:
            connection.close()
        time.sleep(0.5)
    raise RuntimeError(f"cannot read player {player}: {last}")


def check(ledger: Path, port: int, host: str = "127.0.0.1") -> tuple[int, list[str]]:
    """(acknowledged writes checked, one line per write that is missing or different)."""
    expected: dict[str, dict[str, int]] = {}
    for line in ledger.read_text().splitlines():
        if line.strip():
            write = json.loads(line)
            expected.setdefault(write["player"], {})[str(write["round"])] = write["score"]
    problems: list[str] = []
    for player, rounds in sorted(expected.items()):
        stored = read_player(host, port, player)
        for round_, score in rounds.items():
            if stored.get(round_) != score:
                problems.append(
                    f"{player} round {round_}: acknowledged score {score}, "
                    f"stored {stored.get(round_, 'nothing')}"
                )
    return sum(len(rounds) for rounds in expected.values()), problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ledger", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    checked, problems = check(args.ledger, args.port, args.host)
    for problem in problems:
        print(problem)
    print(f"{checked} acknowledged writes checked, {len(problems)} lost or changed")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
