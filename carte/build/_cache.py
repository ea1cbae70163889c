"""The build cache: step key -> the step's result (its layer, if any, and its history time).

A key chains the parent's key with the instruction as the cache rules see it (Docker's rules:
the same parent plus the same instruction; RUN by its command and the build args in use;
COPY/ADD by a checksum of the sources' content and metadata). Records live in
`ROOT/build-cache/<key hex>.json`, written atomically; a record whose layer blob was garbage
collected is a miss, never an error. `prune` removes every record.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import msgspec

from carte.image.layers import LayerBlob
from carte.image.store import ImageStore


class StepRecord(msgspec.Struct, frozen=True, kw_only=True):
    layer: LayerBlob | None = None
    created: str = ""


_decoder = msgspec.json.Decoder(StepRecord)


def step_key(parent: str, instruction: str) -> str:
    """The cache key of a step: the parent's key and the instruction, hashed together."""
    return "sha256:" + hashlib.sha256(f"{parent}\n{instruction}".encode()).hexdigest()


class BuildCache:
    def __init__(self, store: ImageStore) -> None:
        self.store = store
        self.directory = store.root / "build-cache"
        self.directory.mkdir(exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / (key.removeprefix("sha256:") + ".json")

    def get(self, key: str) -> StepRecord | None:
        """The record for `key`, or None (absent, unreadable, or its layer blob is gone)."""
        try:
            record = _decoder.decode(self._path(key).read_bytes())
        except (OSError, msgspec.DecodeError):
            return None
        if record.layer is not None and not self.store.has_blob(record.layer.descriptor.digest):
            return None
        return record

    def put(self, key: str, record: StepRecord) -> None:
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".record-")
        try:
            with open(fd, "wb") as file:
                file.write(msgspec.json.encode(record))
            os.replace(temp, self._path(key))
        finally:
            Path(temp).unlink(missing_ok=True)

    def prune(self) -> int:
        """Remove every record; returns how many went (their layers become garbage)."""
        removed = 0
        for path in self.directory.iterdir():
            path.unlink(missing_ok=True)
            removed += 1
        return removed
