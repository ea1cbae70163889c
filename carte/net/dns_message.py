"""The small part of the DNS wire format (RFC 1035) Carte's resolver needs.

`parse_query` reads a query's header and first question; `answer` builds the reply to it
with A records (or none, with a response code). Pure and synchronous. A message that is not
a well-formed query raises `MalformedMessage`; the server then drops it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

TYPE_A = 1
CLASS_IN = 1
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
_HEADER = struct.Struct("!HHHHHH")
_QR = 0x8000
_OPCODE_MASK = 0x7800
_RD = 0x0100
_RA = 0x0080
_AA = 0x0400
_MAX_LABELS = 128


class MalformedMessage(ValueError):
    """The bytes are not a DNS query Carte can answer."""


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    name: str
    """Lower-case, without the trailing dot."""
    qtype: int
    qclass: int
    question: bytes
    """The question section exactly as received, echoed in the reply."""


def parse_query(data: bytes) -> Query:
    """The header and first question of a query; `MalformedMessage` otherwise."""
    if len(data) < _HEADER.size:
        raise MalformedMessage("shorter than a DNS header")
    ident, flags, qdcount, _, _, _ = _HEADER.unpack_from(data)
    if flags & _QR or qdcount < 1:
        raise MalformedMessage("not a query with a question")
    labels: list[str] = []
    offset = _HEADER.size
    while True:
        if offset >= len(data) or len(labels) > _MAX_LABELS:
            raise MalformedMessage("question name runs past the message")
        length = data[offset]
        offset += 1
        if length == 0:
            break
        if length & 0xC0:
            raise MalformedMessage("compressed name in a question")
        labels.append(data[offset : offset + length].decode("ascii", "replace").lower())
        offset += length
    if offset + 4 > len(data):
        raise MalformedMessage("question has no type and class")
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    return Query(
        id=ident,
        flags=flags,
        name=".".join(labels),
        qtype=qtype,
        qclass=qclass,
        question=data[_HEADER.size : offset + 4],
    )


def answer(
    query: Query, rcode: int, addresses: Sequence[IPv4Address] = (), *, ttl: int = 0
) -> bytes:
    """The authoritative reply to `query`: `rcode` and one A record per address."""
    flags = _QR | _AA | _RA | (query.flags & (_OPCODE_MASK | _RD)) | (rcode & 0xF)
    out = bytearray(_HEADER.pack(query.id, flags, 1, len(addresses), 0, 0))
    out += query.question
    for address in addresses:
        # 0xC00C points back at the question's name (it starts right after the header).
        out += struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, ttl, 4) + address.packed
    return bytes(out)


def server_failure(data: bytes) -> bytes | None:
    """SERVFAIL for the query in `data`, or None when it is not a query worth answering."""
    try:
        query = parse_query(data)
    except MalformedMessage:
        return None
    return answer(query, SERVFAIL)
