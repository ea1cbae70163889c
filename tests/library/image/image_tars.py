"""Builders of real tar files and stored images for the image tests."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence

from carte.image import oci
from carte.image.layers import LayerBlob, store_layer
from carte.image.store import ImageStore, StoredImage

MTIME = 1_600_000_000

Entry = tuple[tarfile.TarInfo, bytes | None]


def file(
    name: str,
    data: bytes = b"",
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = MTIME,
    xattrs: dict[str, bytes] | None = None,
) -> Entry:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, gid, mtime
    if xattrs:
        info.pax_headers = {
            f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape")
            for key, value in xattrs.items()
        }
    return info, data


def directory(name: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, mode, uid, gid, MTIME
    return info, None


def symlink(name: str, target: str) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, MTIME
    return info, None


def hardlink(name: str, target: str) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime = tarfile.LNKTYPE, target, MTIME
    return info, None


def chardev(name: str, major: int, minor: int) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor, info.mode = tarfile.CHRTYPE, major, minor, 0o666
    return info, None


def make_tar(entries: Sequence[Entry]) -> bytes:
    """A PAX tar archive of `entries`, in the order given."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def add_layer(store: ImageStore, tar: bytes, compression: str = "gzip") -> LayerBlob:
    def write(out: io.BufferedIOBase) -> None:
        out.write(tar)

    return store_layer(store, write, compression)  # type: ignore[arg-type]


def make_image(store: ImageStore, layers: Sequence[bytes], name: str | None) -> StoredImage:
    """Store a multi-layer image made of the given uncompressed layer tars."""
    blobs = [add_layer(store, tar) for tar in layers]
    config = oci.ImageConfig(
        architecture="amd64",
        os="linux",
        config=oci.ContainerConfig(cmd=("/bin/sh",)),
        rootfs=oci.RootFS(diff_ids=tuple(b.diff_id for b in blobs)),
    )
    manifest = oci.Manifest(
        schema_version=2,
        media_type=oci.OCI_MANIFEST,
        config=store.put_blob(oci.encode(config), oci.OCI_CONFIG),
        layers=tuple(b.descriptor for b in blobs),
    )
    descriptor = store.put_blob(oci.encode(manifest), oci.OCI_MANIFEST)
    return store.add_image(descriptor, (name,) if name else ())
