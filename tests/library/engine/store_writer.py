"""Child process for the SIGKILL durability test: commits puts forever, reporting each one.

Usage: python store_writer.py DB_PATH. Prints ``committed <n>`` (flushed) only after put n
returned, i.e. after its transaction committed. Runs until killed.
"""

import sys

import trio

from carte.engine import open_sqlite_store


async def write_forever(path: str) -> None:
    async with open_sqlite_store(path) as store:
        n = 0
        while True:
            await store.txn([], {})  # a read-only round trip between writes, like a real daemon
            await store.put(f"jobs/{n:08d}", {"n": n, "payload": "x" * (n % 500)})
            print(f"committed {n}", flush=True)
            n += 1


if __name__ == "__main__":
    trio.run(write_forever, sys.argv[1])
