"""Image references normalise the way Docker's do; bad ones give one-line errors."""

from __future__ import annotations

import pytest

from carte.image.errors import InvalidReference
from carte.image.reference import parse_reference


@pytest.mark.parametrize(
    ("text", "familiar", "full"),
    [
        ("busybox", "busybox:latest", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "busybox:latest", "docker.io/library/busybox:latest"),
        ("docker.io/library/busybox", "busybox:latest", "docker.io/library/busybox:latest"),
        ("index.docker.io/me/app:v2", "me/app:v2", "docker.io/me/app:v2"),
        ("me/app", "me/app:latest", "docker.io/me/app:latest"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/a/b:c", "localhost:5000/a/b:c", "localhost:5000/a/b:c"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest", "127.0.0.1:5000/app:latest"),
        ("ghcr.io/o/r:1", "ghcr.io/o/r:1", "ghcr.io/o/r:1"),
    ],
)
def test_normalisation(text: str, familiar: str, full: str) -> None:
    reference = parse_reference(text)
    assert (reference.familiar, reference.full) == (familiar, full)


def test_digest_reference() -> None:
    digest = "sha256:" + "a" * 64
    reference = parse_reference(f"busybox@{digest}")
    assert reference.digest == digest
    assert reference.full == f"docker.io/library/busybox@{digest}"


@pytest.mark.parametrize("text", ["", "Busybox", "bad name", "a:", "a:b:c", "x@sha256:12", "a//b"])
def test_invalid_references_are_refused_with_the_text(text: str) -> None:
    with pytest.raises(InvalidReference) as caught:
        parse_reference(text)
    message = str(caught.value)
    assert "\n" not in message
    assert text in message
