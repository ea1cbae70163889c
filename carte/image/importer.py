"""`carte import TAR NAME[:TAG]`: a root filesystem tarball becomes a one-layer image."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

from carte.api.errors import InvalidArgument
from carte.image import oci
from carte.image.digest import chain_ids
from carte.image.errors import InvalidImage
from carte.image.layers import copy_stream, store_layer, unpack_layer
from carte.image.reference import parse_reference
from carte.image.store import ImageStore, StoredImage

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
) -> StoredImage:
    """Store `tar_path` (plain, gzip or zstd) as a one-layer image tagged `name`.

    The layer is gzip-compressed with a fixed header, so the same tar always gives the same
    layer digest. The layer is unpacked into the layer cache at once, so a hostile tar is
    refused here (`UnsafeLayer` naming the entry) and no image is recorded; `changes` becomes
    the image's container defaults (Cmd, Env, ...). Raises `InvalidArgument` if the file cannot
    be read and `InvalidImage` if it is not a tar archive.
    """
    names = (parse_reference(name).familiar,) if name else ()
    with store.writing():
        try:
            with open(tar_path, "rb") as source:
                layer = store_layer(store, copy_stream(source), "gzip")
        except OSError as exc:
            raise InvalidArgument(f"cannot read {tar_path}: {exc.strerror or exc}") from None
        except EOFError:
            raise InvalidImage(f"{tar_path} ends early; it is truncated or corrupt") from None
        chain_id = chain_ids([layer.diff_id])[0]
        unpack_layer(store, layer.descriptor, layer.diff_id, chain_id, trusted=False)
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
