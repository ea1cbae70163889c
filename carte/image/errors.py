"""Errors raised by the image library; each is a `CarteError` so the API maps it to a status."""

from carte.api.errors import Conflict, InvalidArgument, NotFound


class ImageNotFound(NotFound):
    """No image matches a name, id or digest."""


class AmbiguousImage(Conflict):
    """An id prefix matches more than one image."""


class InvalidReference(InvalidArgument):
    """An image reference or digest string is malformed."""


class DigestMismatch(InvalidArgument):
    """Content does not hash to the digest it was announced with; nothing was stored."""


class UnsafeLayer(InvalidArgument):
    """A layer or archive entry would escape its directory or is not allowed from this source."""


class InvalidImage(InvalidArgument):
    """A manifest, config or archive is malformed or refers to missing content."""
