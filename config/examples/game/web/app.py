"""The game's web tier: a WSGI app (run by Debian's gunicorn) that keeps players' scores in
4 redis shards, chosen by a CRC-32 of the player's name.

  POST /score   {"player": "p17", "round": 3, "score": 420}  -> 200 {"shard": 2, "version": "1"}
  GET  /score?player=p17                                     -> 200 {"rounds": {"3": 420}, ...}
  GET  /health                                               -> 200 (the process serves)

A write is answered 200 only after its shard confirmed it (appendfsync always on the shard),
so a 200 is a promise that the score is stored. A shard that cannot be reached gives 503 and
names the shard; nothing else is affected.
"""

import json
import os
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import parse_qs

import redis

SHARD_HOSTS = os.environ.get("SHARDS", "db1,db2,db3,db4").split(",")
VERSION = (Path(__file__).parent / "VERSION").read_text().strip()
SHARDS = [
    redis.Redis(host=host, port=6379, socket_timeout=2, socket_connect_timeout=1)
    for host in SHARD_HOSTS
]

StartResponse = Callable[[str, list[tuple[str, str]]], object]


def shard_of(player: str) -> int:
    """The shard (0-based) that owns `player`; load.py and check.py use the same rule."""
    return zlib.crc32(player.encode()) % len(SHARD_HOSTS)


def application(environ: dict[str, object], start_response: StartResponse) -> Iterable[bytes]:
    method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
    if path == "/health":
        return reply(start_response, 200, {"version": VERSION})
    if path != "/score":
        return reply(start_response, 404, {"error": f"no such path {path}; use /score"})
    try:
        if method == "POST":
            return write_score(environ, start_response)
        if method == "GET":
            return read_scores(environ, start_response)
    except ValueError as error:
        return reply(start_response, 400, {"error": str(error)})
    return reply(start_response, 405, {"error": "use GET or POST"})


def write_score(environ: dict[str, object], start_response: StartResponse) -> Iterable[bytes]:
    length = int(str(environ.get("CONTENT_LENGTH") or 0))
    body = json.loads(environ["wsgi.input"].read(length) or b"{}")  # type: ignore[attr-defined]
    player, round_, score = str(body["player"]), int(body["round"]), int(body["score"])
    shard = shard_of(player)
    try:
        SHARDS[shard].hset(f"scores:{player}", str(round_), score)
    except redis.RedisError as error:
        return reply(start_response, 503, {"error": str(error), "shard": shard})
    return reply(start_response, 200, {"shard": shard, "version": VERSION})


def read_scores(environ: dict[str, object], start_response: StartResponse) -> Iterable[bytes]:
    query = parse_qs(str(environ.get("QUERY_STRING", "")))
    if "player" not in query:
        raise ValueError("give ?player=NAME")
    player = query["player"][0]
    shard = shard_of(player)
    try:
        stored = SHARDS[shard].hgetall(f"scores:{player}")
    except redis.RedisError as error:
        return reply(start_response, 503, {"error": str(error), "shard": shard})
    rounds = {key.decode(): int(value) for key, value in stored.items()}
    return reply(start_response, 200, {"player": player, "shard": shard, "rounds": rounds})


def reply(start_response: StartResponse, status: int, body: dict[str, object]) -> list[bytes]:
    data = json.dumps(body).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
    start_response(
        f"{status} {reason.get(status, 'Service Unavailable')}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]
