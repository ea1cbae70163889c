"""A registry client speaking the OCI distribution API (synchronous, threads for parallel blobs).

`Registry(host).pull(store, reference)` fetches a manifest (choosing linux/amd64 from an index),
its config and layers (in parallel, skipping blobs already stored; each verified and only made
visible when complete, so an interrupted pull leaves nothing partial and the next one resumes),
unpacks the layers safely and tags the image. `push` does HEAD before upload, tries a
cross-repository mount when the registry already holds the blob elsewhere, then uploads
monolithically or in chunks, and finally puts the manifest. Bearer-token and basic auth follow
the `WWW-Authenticate` challenge; plain HTTP only for loopback hosts or an explicit insecure list.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, NamedTuple

import msgspec

from carte.api.errors import CarteError, Unavailable
from carte.image import oci
from carte.image.archive import unpack_all
from carte.image.auth import Credentials, CredentialStore, parse_challenge
from carte.image.digest import chain_ids, sha256_digest
from carte.image.errors import DigestMismatch, ImageNotFound, InvalidImage
from carte.image.layers import is_unpacked, unpack_layer
from carte.image.reference import DEFAULT_DOMAIN, Reference
from carte.image.store import ImageStore, StoredImage

MANIFEST_ACCEPT = ", ".join(
    (oci.OCI_INDEX, oci.OCI_MANIFEST, oci.DOCKER_MANIFEST_LIST, oci.DOCKER_MANIFEST)
)
DEFAULT_CHUNK_SIZE = 8 << 20
DEFAULT_PARALLEL = 4
_DOCKER_HUB_API = "registry-1.docker.io"
_LOOPBACK = ("localhost", "127.0.0.1", "[::1]", "::1")
_READ_SIZE = 1 << 20
# A per-read socket timeout so a stalled registry cannot hang a pull forever.
_SOCKET_TIMEOUT = 60.0


class RegistryUnauthorized(CarteError):
    code: ClassVar[str] = "unauthorized"
    status: ClassVar[int] = 401


class RegistryError(Unavailable):
    """The registry could not be reached or answered in a way the protocol does not allow."""


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """One progress report: `action` is "pull", "extract", "push", "exists" or "mounted"."""

    action: str
    digest: str
    done: int
    total: int


ProgressCallback = Callable[[Progress], None]


def _ignore_progress(_: Progress) -> None:
    return None


class _Transfer(NamedTuple):
    """What every blob of one pull or push shares: where it is stored, the repository on the
    registry, the token scope to ask for, and whom to tell about progress."""

    store: ImageStore
    repository: str
    scope: str
    progress: ProgressCallback


def _host_only(host: str) -> str:
    return host.rsplit(":", 1)[0] if not host.endswith("]") else host


class Registry:
    """A client for one registry host. Safe to use from several threads."""

    def __init__(
        self,
        host: str,
        *,
        credentials: CredentialStore | None = None,
        insecure: Iterable[str] = (),
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        parallel: int = DEFAULT_PARALLEL,
    ) -> None:
        self.host = host
        self.api_host = _DOCKER_HUB_API if host == DEFAULT_DOMAIN else host
        plain = _host_only(host) in _LOOPBACK or host in set(insecure)
        self.scheme = "http" if plain else "https"
        self._credentials = credentials or CredentialStore()
        self._chunk_size = chunk_size
        self._parallel = parallel
        self._local = threading.local()
        self._lock = threading.Lock()
        self._auth_headers: dict[str, str] = {}
        self._known_repo: dict[str, str] = {}
        self._open: list[http.client.HTTPConnection] = []

    # -- HTTP --------------------------------------------------------------------------------

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        connections: dict[tuple[str, str], http.client.HTTPConnection] = (
            self._local.__dict__.setdefault("connections", {})
        )
        key = (scheme, netloc)
        if key not in connections:
            factory = (
                http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            )
            connections[key] = factory(netloc, timeout=_SOCKET_TIMEOUT)
            with self._lock:
                self._open.append(connections[key])
        return connections[key]

    def close(self) -> None:
        """Close every connection this client opened (in any thread)."""
        with self._lock:
            opened, self._open = self._open, []
        for connection in opened:
            connection.close()
        self._local = threading.local()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _drop_connection(self, scheme: str, netloc: str) -> None:
        connection = self._local.__dict__.get("connections", {}).pop((scheme, netloc), None)
        if connection is not None:
            connection.close()

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None = None,
    ) -> http.client.HTTPResponse:
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in (1, 2):
            connection = self._connection(parts.scheme, parts.netloc)
            try:
                connection.request(method, target, body=body, headers=headers)
                return connection.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop_connection(parts.scheme, parts.netloc)
                if attempt == 2:
                    raise
            except OSError:
                self._drop_connection(parts.scheme, parts.netloc)
                raise
        raise AssertionError("unreachable")

    def _url(self, path: str) -> str:
        return f"{self.scheme}://{self.api_host}{path}"

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scope: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> http.client.HTTPResponse:
        """Send a request with this scope's auth, answering one 401 challenge; follow redirects.

        Returns a response whose status is in `ok` (the caller reads it fully). Raises
        `RegistryUnauthorized`, `ImageNotFound` for 404 on manifests, or `RegistryError`.
        """
        url = path_or_url if "://" in path_or_url else self._url(path_or_url)
        authenticated = False
        while True:
            sent = dict(headers or {})
            with self._lock:
                authorization = self._auth_headers.get(scope)
            if authorization:
                sent["Authorization"] = authorization
            try:
                response = self._send(method, url, sent, body)
            except ssl.SSLError as exc:
                raise RegistryError(
                    f"cannot reach registry {self.host} over HTTPS: {exc.reason or exc}; if it "
                    "serves plain HTTP, use --insecure-registry (or images.insecure_registries)"
                ) from None
            except OSError as exc:
                raise RegistryError(f"cannot reach registry {self.host}: {exc}") from None
            if response.status == 401:
                challenge = response.getheader("WWW-Authenticate", "")
                response.read()
                if authenticated:
                    raise self._unauthorized(scope)
                # A cached token may have expired: answer the challenge once, then give up.
                self._authenticate(challenge, scope)
                authenticated = True
                continue
            if response.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
                location = response.getheader("Location", "")
                response.read()
                return self._follow(method, urllib.parse.urljoin(url, location), ok)
            if response.status in ok:
                return response
            detail = response.read()[:300].decode(errors="replace").strip()
            raise RegistryError(
                f"registry {self.host} answered {response.status} to {method} "
                f"{urllib.parse.urlsplit(url).path}: {detail or response.reason}"
            )

    def _follow(self, method: str, url: str, ok: tuple[int, ...]) -> http.client.HTTPResponse:
        # Redirects (blob storage) carry their own authorization in the URL; send none.
        try:
            response = self._send(method, url, {})
        except OSError as exc:
            raise RegistryError(f"cannot follow redirect from {self.host}: {exc}") from None
        if response.status not in ok:
            response.read()
            raise RegistryError(f"redirect target for {self.host} answered {response.status}")
        return response

    def _unauthorized(self, scope: str) -> RegistryUnauthorized:
        repository = scope.split(":")[1] if scope.count(":") >= 2 else self.host
        return RegistryUnauthorized(
            f"registry {self.host} refused access to {repository}; "
            f"run carte login {self.host} (or check the name and your permissions)"
        )

    def _authenticate(self, header: str, scope: str) -> None:
        challenge = parse_challenge(header)
        credentials = self._credentials.get(self.host)
        if challenge.scheme == "basic":
            if credentials is None:
                raise self._unauthorized(scope)
            value = "Basic " + _basic(credentials)
        elif challenge.scheme == "bearer":
            value = "Bearer " + self._fetch_token(challenge.params, scope, credentials)
        else:
            raise RegistryError(
                f"registry {self.host} asks for unsupported authentication {challenge.scheme!r}"
            )
        with self._lock:
            self._auth_headers[scope] = value

    def _fetch_token(
        self, params: dict[str, str], scope: str, credentials: Credentials | None
    ) -> str:
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.host} sent a Bearer challenge without a realm")
        query = [("scope", s) for s in scope.split(" ") if s]
        if "service" in params:
            query.insert(0, ("service", params["service"]))
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {"Authorization": "Basic " + _basic(credentials)} if credentials else {}
        try:
            response = self._send("GET", url, headers)
        except OSError as exc:
            raise RegistryError(f"cannot reach token service {realm}: {exc}") from None
        data = response.read()
        if response.status in (401, 403):
            raise self._unauthorized(scope)
        if response.status != 200:
            raise RegistryError(f"token service {realm} answered {response.status}")
        try:
            answer = json.loads(data)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token service {realm} sent no token")
        return token

    def ping(self) -> None:
        """Check that the host speaks the distribution API and our login (if any) is accepted."""
        with contextlib.closing(self):
            self.request("GET", "/v2/", scope="registry:catalog:*").read()

    # -- pull --------------------------------------------------------------------------------

    def pull(
        self,
        store: ImageStore,
        reference: Reference,
        progress: ProgressCallback = _ignore_progress,
        *,
        unpack: bool = True,
    ) -> StoredImage:
        """Pull `reference` into the store and tag it; see the module docstring for guarantees.

        With `unpack=False` the layers are only downloaded and verified; they are unpacked
        (and a hostile one refused) by the first `lowerdirs()` call instead.

        Raises `ImageNotFound`, `RegistryUnauthorized`, `RegistryError`, `DigestMismatch`,
        `UnsafeLayer` or `InvalidImage`; no image is recorded unless everything succeeded.
        """
        repository = reference.path
        scope = f"repository:{repository}:pull"
        with store.writing(), contextlib.closing(self):
            data, media_type = self._get_manifest(
                reference, reference.digest or reference.tag or "latest", scope
            )
            if media_type in oci.INDEX_TYPES:
                chosen = _linux_amd64(oci.decode_index(data), reference)
                data, media_type = self._get_manifest(reference, chosen.digest, scope)
            if media_type not in oci.MANIFEST_TYPES:
                raise InvalidImage(
                    f"{reference.full} is a {media_type}, not a container image; it cannot be run"
                )
            manifest = oci.decode_manifest(data, f"manifest of {reference.full}")
            transfer = _Transfer(store, repository, scope, progress)
            self._download(transfer, manifest.config)
            chains = _layer_chains(store, manifest) if unpack else {}

            def fetch(layer: oci.Descriptor) -> None:
                present = store.has_blob(layer.digest)
                self._download(transfer, layer)
                # Unpacking as soon as a layer arrives overlaps it with the other downloads.
                if layer.digest in chains:
                    diff_id, chain_id = chains[layer.digest]
                    digest, size = layer.digest, layer.size
                    if not is_unpacked(store, chain_id):
                        progress(Progress(action="extract", digest=digest, done=0, total=size))
                        unpack_layer(store, layer, diff_id, chain_id, trusted=False)
                    if not present:
                        progress(Progress(action="extract", digest=digest, done=size, total=size))

            with ThreadPoolExecutor(max_workers=self._parallel) as pool:
                list(pool.map(fetch, manifest.layers))
            descriptor = store.put_blob(data, media_type)
            if unpack:
                unpack_all(store, descriptor)
            names = (reference.familiar,) if reference.tag or not reference.digest else ()
            return store.add_image(descriptor, names)

    def _get_manifest(
        self, reference: Reference, tag_or_digest: str, scope: str
    ) -> tuple[bytes, str]:
        response = self.request(
            "GET",
            f"/v2/{reference.path}/manifests/{tag_or_digest}",
            scope=scope,
            headers={"Accept": MANIFEST_ACCEPT},
            ok=(200, 404),
        )
        data = response.read()
        if response.status == 404:
            raise ImageNotFound(
                f'image "{reference.familiar_repository}:{tag_or_digest}" not found in registry '
                f"{self.host}; check the name and tag"
            )
        if tag_or_digest.startswith("sha256:") and sha256_digest(data) != tag_or_digest:
            raise DigestMismatch(
                f"manifest {tag_or_digest} from {self.host} hashes to {sha256_digest(data)}; "
                "nothing was stored"
            )
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip()
        if content_type not in oci.MANIFEST_TYPES | oci.INDEX_TYPES:
            content_type = oci.sniff_media_type(data, f"manifest of {reference.full}")
        return data, content_type

    def _download(self, transfer: _Transfer, descriptor: oci.Descriptor) -> None:
        store, repository, scope, progress = transfer
        digest, size = descriptor.digest, descriptor.size
        if store.has_blob(digest):
            progress(Progress(action="exists", digest=digest, done=size, total=size))
            return
        response = self.request("GET", f"/v2/{repository}/blobs/{digest}", scope=scope)
        try:
            with store.ingest(digest, size) as blob:
                while data := response.read(_READ_SIZE):
                    blob.write(data)
                    progress(Progress(action="pull", digest=digest, done=blob.size, total=size))
                # http.client ends a body cut short by the server without an error.
                if blob.size < size:
                    raise RegistryError(
                        f"download of {digest} from {self.host} broke off after "
                        f"{blob.size} of {size} bytes; nothing was stored, pull again"
                    )
        except OSError as exc:
            raise RegistryError(
                f"download of {digest} from {self.host} broke off: {exc}; pull again to resume"
            ) from None
        finally:
            response.close()

    # -- push --------------------------------------------------------------------------------

    def push(
        self,
        store: ImageStore,
        image: StoredImage,
        reference: Reference,
        progress: ProgressCallback = _ignore_progress,
    ) -> str:
        """Push `image` as `reference` (a tag in this registry); return the manifest digest.

        Blobs the repository already has are skipped (HEAD); blobs known to be in another
        repository of this registry are mounted. Raises `RegistryUnauthorized` or `RegistryError`.
        """
        repository = reference.path
        scope = f"repository:{repository}:pull,push"
        transfer = _Transfer(store, repository, scope, progress)
        with contextlib.closing(self):
            with ThreadPoolExecutor(max_workers=self._parallel) as pool:
                list(
                    pool.map(
                        lambda d: self._upload(transfer, d),
                        image.manifest.layers,
                    )
                )
            self._upload(transfer, image.manifest.config)
            response = self.request(
                "PUT",
                f"/v2/{repository}/manifests/{reference.tag or 'latest'}",
                scope=scope,
                headers={"Content-Type": image.manifest_descriptor.media_type},
                body=store.read_blob(image.manifest_digest),
                ok=(201, 200),
            )
            response.read()
        return image.manifest_digest

    def _upload(self, transfer: _Transfer, descriptor: oci.Descriptor) -> None:
        store, repository, scope, progress = transfer
        digest, size = descriptor.digest, descriptor.size

        def done(action: str) -> None:
            progress(Progress(action=action, digest=digest, done=size, total=size))
            self._remember(digest, repository)

        head = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scope=scope, ok=(200, 404))
        head.read()
        if head.status == 200:
            done("exists")
            return
        with self._lock:
            source_repository = self._known_repo.get(digest)
        uploads = f"/v2/{repository}/blobs/uploads/"
        if source_repository and source_repository != repository:
            query = urllib.parse.urlencode({"mount": digest, "from": source_repository})
            mount_scope = f"{scope} repository:{source_repository}:pull"
            started = self.request("POST", f"{uploads}?{query}", scope=mount_scope, ok=(201, 202))
            started.read()
            if started.status == 201:
                done("mounted")
                return
        else:
            started = self.request("POST", uploads, scope=scope, ok=(202,))
            started.read()
        location = urllib.parse.urljoin(self._url(uploads), started.getheader("Location", ""))
        with store.open_blob(digest) as blob:
            if size <= self._chunk_size:
                location = self._finish_upload(location, digest, blob.read(), scope)
            else:
                offset = 0
                while chunk := blob.read(self._chunk_size):
                    patched = self.request(
                        "PATCH",
                        location,
                        scope=scope,
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                        },
                        body=chunk,
                        ok=(202,),
                    )
                    patched.read()
                    offset += len(chunk)
                    location = urllib.parse.urljoin(
                        location, patched.getheader("Location", location)
                    )
                    progress(Progress(action="push", digest=digest, done=offset, total=size))
                self._finish_upload(location, digest, b"", scope)
        done("push")

    def _finish_upload(self, location: str, digest: str, body: bytes, scope: str) -> str:
        separator = "&" if "?" in location else "?"
        url = f"{location}{separator}{urllib.parse.urlencode({'digest': digest})}"
        response = self.request(
            "PUT",
            url,
            scope=scope,
            headers={"Content-Type": "application/octet-stream"},
            body=body,
            ok=(201, 204),
        )
        response.read()
        return location

    def _remember(self, digest: str, repository: str) -> None:
        with self._lock:
            self._known_repo.setdefault(digest, repository)


def _basic(credentials: Credentials) -> str:
    return base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()


def _layer_chains(store: ImageStore, manifest: oci.Manifest) -> dict[str, tuple[str, str]]:
    """Layer digest -> (diff_id, chain_id) from the stored config; empty if they disagree
    (then `unpack_all` reports the corrupt image after the downloads)."""
    config = oci.decode_config(store.read_blob(manifest.config.digest))
    diff_ids = config.rootfs.diff_ids
    if len(diff_ids) != len(manifest.layers):
        return {}
    return {
        layer.digest: (diff_id, chain_id)
        for layer, diff_id, chain_id in zip(
            manifest.layers, diff_ids, chain_ids(diff_ids), strict=True
        )
    }


def _linux_amd64(index: oci.Index, reference: Reference) -> oci.Descriptor:
    for descriptor in index.manifests:
        platform = descriptor.platform
        if platform is not None and (platform.os, platform.architecture) == ("linux", "amd64"):
            return descriptor
    raise ImageNotFound(
        f'image "{reference.familiar}" has no linux/amd64 variant; it cannot run on this machine'
    )
