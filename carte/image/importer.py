"""`carte import TAR NAME[:TAG]`: a root filesystem tarball becomes a one-layer image.

Import is run by the host's root, so it is trusted as Docker trusts it, with one difference:
device nodes under /dev (debootstrap and `tar` of a live root leave dev/null, dev/full, ...)
are dropped from the layer with a notice, since Carte makes /dev in every container. A device
node anywhere else still refuses the layer, as it does for pulled and loaded images.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from carte.api.errors import InvalidArgument
from carte.image import oci
from carte.image.compression import decompressed
from carte.image.errors import InvalidImage
from carte.image.layers import ingest_base_layer
from carte.image.reference import parse_reference
from carte.image.store import ImageStore, StoredImage

log = logging.getLogger("carte.image.importer")

_CHUNK = 1 << 20
_SHOWN_NAMES = 5

_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


def host_architecture() -> str:
    """The OCI architecture name of this machine (`amd64` on x86-64)."""
    machine = platform.machine()
    return _ARCHITECTURES.get(machine, machine)


def creation_time() -> str:
    """Now in RFC 3339 UTC, or `SOURCE_DATE_EPOCH` when set (reproducible builds and imports)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    if epoch.isdigit():
        moment = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
    else:
        moment = datetime.datetime.now(datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def import_rootfs(
    store: ImageStore,
    tar_path: Path,
    name: str | None,
    changes: oci.ContainerConfig | None = None,
    notice: Callable[[str], None] | None = None,
) -> StoredImage:
    """Store `tar_path` (plain, gzip or zstd) as a one-layer image tagged `name`.

    The tar is read once: each chunk is unpacked into the layer cache, hashed and written to
    an uncompressed layer blob (a local layer, as `docker import` keeps it; the same tar always
    gives the same digest). A hostile tar is refused here (`UnsafeLayer` naming the entry) and
    nothing is recorded; `changes` becomes the image's container defaults (Cmd, Env, ...).
    Device nodes under /dev are left out of the layer and `notice` (default: the daemon's log)
    gets one line naming them. Raises `InvalidArgument` if the file cannot be read and
    `InvalidImage` if it is not a tar archive.
    """
    names = (parse_reference(name).familiar,) if name else ()
    with store.writing():
        try:
            dropped = _device_nodes_under_dev(tar_path)
            with open(tar_path, "rb") as source, decompressed(source) as stream:
                layer = ingest_base_layer(
                    store, _Without(stream, dropped), trusted=False, what=str(tar_path)
                )
        except OSError as exc:
            raise InvalidArgument(f"cannot read {tar_path}: {exc.strerror or exc}") from None
        except EOFError:
            raise InvalidImage(f"{tar_path} ends early; it is truncated or corrupt") from None
        if dropped:
            (notice or log.warning)(_dropped_notice(tar_path, [name for _, _, name in dropped]))
        created = creation_time()
        config = oci.ImageConfig(
            created=created,
            architecture=host_architecture(),
            os="linux",
            config=changes or oci.ContainerConfig(),
            rootfs=oci.RootFS(diff_ids=(layer.diff_id,)),
            history=(
                oci.History(created=created, created_by="carte import", comment=tar_path.name),
            ),
        )
        config_descriptor = store.put_blob(oci.encode(config), oci.OCI_CONFIG)
        manifest = oci.Manifest(
            schema_version=2,
            media_type=oci.OCI_MANIFEST,
            config=config_descriptor,
            layers=(layer.descriptor,),
            annotations={oci.CREATED: created},
        )
        manifest_descriptor = store.put_blob(oci.encode(manifest), oci.OCI_MANIFEST)
        return store.add_image(manifest_descriptor, names)


_Span = tuple[int, int, str]


def _device_nodes_under_dev(tar_path: Path) -> list[_Span]:
    """Where the device nodes under /dev sit in the uncompressed tar: (start, end, name).

    A span runs from the entry's first header (pax or GNU long-name headers included) to where
    the next entry starts. A tar that cannot be read gives the spans found so far: the import
    then reports the broken archive when it unpacks the layer.
    """
    try:
        walked = _walk_headers(tar_path)
    except OSError:
        walked = None
    if walked is not None:
        return walked
    spans: list[_Span] = []
    try:
        # A plain tar is read by seeking from header to header; a compressed one is streamed.
        with tarfile.open(tar_path, mode="r:") as archive:
            _collect(archive, spans)
        return spans
    except (tarfile.TarError, EOFError, OSError):
        spans.clear()
    try:
        with open(tar_path, "rb") as source, decompressed(source) as stream:
            with tarfile.open(fileobj=stream, mode="r|", bufsize=_CHUNK) as archive:
                _collect(archive, spans)
    except (tarfile.TarError, EOFError, OSError):
        pass
    return spans


_BLOCK = 512


def _walk_headers(tar_path: Path) -> list[_Span] | None:
    """The spans of a plain ustar/GNU/pax tar, read header to header with pread (under half
    tarfile's time on a root filesystem); None when the file is anything this walk does not
    know (compressed, GNU old sparse, pax global headers, a bad checksum): tarfile reads it."""
    fd = os.open(tar_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _walk(fd)
    except ValueError:  # a malformed number or pax record
        return None
    finally:
        os.close(fd)


def _walk(fd: int) -> list[_Span] | None:
    spans: list[_Span] = []
    offset = 0
    start: int | None = None  # where the current entry's first (extended) header is
    long_name: str | None = None
    while True:
        block = os.pread(fd, _BLOCK, offset)
        if len(block) < _BLOCK:
            return None
        if block == bytes(_BLOCK):
            return spans
        if _checksum(block) != _number(block[148:156]):
            return None
        kind = block[156:157]
        size = _number(block[124:136])
        if kind in (b"g", b"S", b"K") or size < 0:
            return None
        if start is None:
            start = offset
        data_end = offset + _BLOCK + -(-size // _BLOCK) * _BLOCK
        if kind in (b"x", b"L"):
            data = os.pread(fd, size, offset + _BLOCK)
            if len(data) < size:
                return None
            if kind == b"L":
                long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            else:
                fields = _pax_fields(data)
                if "size" in fields:
                    return None  # a size override (a file over 8 GiB): tarfile knows
                if "path" in fields:
                    long_name = fields["path"]
            offset = data_end
            continue
        name = long_name if long_name is not None else _header_name(block)
        if kind in (b"3", b"4") and _is_under_dev(name):
            spans.append((start, offset + _BLOCK, name))
        start, long_name, offset = None, None, data_end


def _checksum(block: bytes) -> int:
    return sum(block[:148]) + 8 * 32 + sum(block[156:])


def _number(field: bytes) -> int:
    """A tar header number: octal text, or GNU base-256 when the top bit is set."""
    if field[0] & 0x80:
        if field[0] == 0xFF:
            return -1
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _header_name(block: bytes) -> str:
    name = block[:100].split(b"\0", 1)[0]
    if block[257:262] == b"ustar":
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _pax_fields(data: bytes) -> dict[str, str]:
    """The records of a pax extended header ("LEN key=value\n"); ValueError if malformed."""
    fields: dict[str, str] = {}
    position = 0
    while position < len(data) and data[position] != 0:
        space = data.index(b" ", position)
        length = int(data[position:space])
        if length <= 0:
            raise ValueError("bad pax record")
        key, _, value = data[space + 1 : position + length - 1].partition(b"=")
        fields[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        position += length
    return fields


def _collect(archive: tarfile.TarFile, spans: list[_Span]) -> None:
    for member in archive:
        if (member.ischr() or member.isblk()) and _is_under_dev(member.name):
            spans.append((member.offset, member.offset_data, member.name))


def _is_under_dev(name: str) -> bool:
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return len(parts) >= 2 and parts[0] == "dev"


class _Without:
    """A reader of the uncompressed tar `stream` that leaves out the byte ranges `spans`."""

    def __init__(self, stream: BinaryIO, spans: list[_Span]) -> None:
        self._stream = stream
        self._spans = [(start, end) for start, end, _ in spans]
        self._position = 0  # in the source stream

    def read(self, size: int = -1) -> bytes:
        while self._spans and self._position >= self._spans[0][0]:
            _, end = self._spans.pop(0)
            self._skip(end - self._position)
        wanted = _CHUNK if size < 0 else size
        if self._spans:
            wanted = min(wanted, self._spans[0][0] - self._position)
        data = self._stream.read(wanted)
        self._position += len(data)
        return data

    def _skip(self, size: int) -> None:
        while size > 0:
            data = self._stream.read(min(_CHUNK, size))
            if not data:
                raise EOFError("the tar ends inside an entry")
            self._position += len(data)
            size -= len(data)


def _dropped_notice(tar_path: Path, names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN_NAMES])
    more = f" and {len(names) - _SHOWN_NAMES} more" if len(names) > _SHOWN_NAMES else ""
    return (
        f"import of {tar_path.name}: left out {len(names)} device node(s) under /dev ({shown}"
        f"{more}); Carte makes /dev in every container"
    )
