"""Image references (`name[:tag][@digest]`), normalised the way Docker does it.

`busybox` means `docker.io/library/busybox:latest`; the familiar form drops the
`docker.io/` and `library/` prefixes again and is what the store records as the tag name.
"""

from __future__ import annotations

import re

import msgspec

from carte.image.digest import parse_digest
from carte.image.errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
_LEGACY_DOMAIN = "index.docker.io"
_OFFICIAL_PREFIX = "library/"

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")


class Reference(msgspec.Struct, frozen=True, kw_only=True):
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """`docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_repository(self) -> str:
        """`busybox`, `me/app`, `localhost:5000/app` — as Docker prints it."""
        if self.domain != DEFAULT_DOMAIN:
            return self.repository
        return self.path.removeprefix(_OFFICIAL_PREFIX)

    @property
    def familiar(self) -> str:
        """`busybox:latest` (tag defaulted), or `name@digest` for a digest-only reference."""
        if self.tag is None and self.digest is not None:
            return f"{self.familiar_repository}@{self.digest}"
        return f"{self.familiar_repository}:{self.tag or DEFAULT_TAG}"

    @property
    def full(self) -> str:
        """`docker.io/library/busybox:latest` — the form registries are addressed with."""
        if self.tag is None and self.digest is not None:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or DEFAULT_TAG}"


def parse_reference(text: str) -> Reference:
    """Parse `name[:tag][@digest]`; raises `InvalidReference` naming the text and the rule."""
    rest = text
    digest = None
    if "@" in rest:
        rest, digest_text = rest.rsplit("@", 1)
        try:
            digest = parse_digest(digest_text)
        except InvalidReference:
            raise InvalidReference(
                f'image reference "{text}" has an invalid digest; '
                "expected NAME@sha256: followed by 64 lowercase hex digits"
            ) from None
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(
                f'image reference "{text}" has an invalid tag "{tag}"; '
                "use letters, digits, '_', '.' and '-' (at most 128)"
            )
    domain, path = _split_domain(rest)
    if (
        not rest
        or not _DOMAIN.fullmatch(domain)
        or not all(_COMPONENT.fullmatch(part) for part in path.split("/"))
    ):
        raise InvalidReference(
            f'image reference "{text}" is not valid; expected NAME[:TAG] with a lowercase name '
            "such as busybox, me/app:1.0 or localhost:5000/app"
        )
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        domain, path = first, remainder
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == _LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = _OFFICIAL_PREFIX + path
    return domain, path
