"""Content digests (`sha256:<hex>`): validation and hashing while data streams past."""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from carte.image.errors import InvalidReference

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def parse_digest(text: str) -> str:
    """Return `text` if it is a sha256 digest, else raise `InvalidReference` naming it."""
    if not _DIGEST.fullmatch(text):
        raise InvalidReference(
            f'digest "{text}" is not valid; expected "sha256:" followed by 64 lowercase hex digits'
        )
    return text


def digest_hex(digest: str) -> str:
    """The hex part of a validated digest (the blob's file name)."""
    return parse_digest(digest).removeprefix("sha256:")


def sha256_digest(data: bytes) -> str:
    """The digest of a byte string."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: list[str] | tuple[str, ...]) -> list[str]:
    """ChainIDs of a layer stack, bottom first, as the OCI image spec defines them."""
    chain: list[str] = []
    for diff_id in diff_ids:
        parse_digest(diff_id)
        chain.append(diff_id if not chain else sha256_digest(f"{chain[-1]} {diff_id}".encode()))
    return chain


class DigestingWriter:
    """A write-only file object that hashes and counts everything written before passing it on."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._target.write(data)

    def flush(self) -> None:
        self._target.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class DigestingReader:
    """A read-only file object that hashes and counts everything read through it."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Read to the end so the digest covers the whole stream (tar padding included)."""
        while self.read(1 << 20):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()
