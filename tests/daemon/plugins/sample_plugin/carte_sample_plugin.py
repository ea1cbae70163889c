"""A test plugin: keys in the daemon's store, through commands the API exposes.

Installed by tests/daemon/plugins into a per-test directory so the daemon finds it only through its
`carte.plugins` entry point. `PutKey` commits to the store before it answers, which the
durability test relies on.
"""

from typing import ClassVar

from carte.plugins.api import Command, Fact, Handler, NotFound, on


class PutKey(Command[int], frozen=True, kw_only=True):
    """Store `value` under `sample/<key>`; answers the store revision of the write."""

    key: str
    value: str


class GetKey(Command[str], frozen=True, kw_only=True):
    """Read `sample/<key>`; not_found when it was never put."""

    key: str


class CountKeys(Command[int], frozen=True, kw_only=True):
    """How many sample keys the store holds."""


class KeyPut(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "sample.key_put"
    revision: int


class SampleHandler(Handler):
    name = "sample"

    @on(PutKey)
    async def put_key(self, command: PutKey) -> int:
        revision = await self.ctx.store.put(f"sample/{command.key}", command.value.encode())
        await self.ctx.bus.publish(KeyPut(id=command.key, revision=revision))
        return revision

    @on(GetKey)
    async def get_key(self, command: GetKey) -> str:
        entry = await self.ctx.store.get(f"sample/{command.key}")
        if entry is None:
            raise NotFound(f'sample key "{command.key}" not found; put it first (PutKey)')
        return entry.value.decode()

    @on(CountKeys)
    async def count_keys(self, command: CountKeys) -> int:
        return len(await self.ctx.store.list("sample/"))
