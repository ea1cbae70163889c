"""Bearer-token auth against docker-registry in token mode.

The token service is a test double (a small HTTP server in this test signing JWTs with a
throwaway key through the openssl command), because no real authorization server exists on
this machine; the registry verifying those tokens is the real docker-registry.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from image_tars import file, make_image, make_tar
from support.registry import RunningRegistry, start_registry

from carte.image.auth import Credentials, CredentialStore
from carte.image.reference import parse_reference
from carte.image.registry import Progress, Registry, RegistryUnauthorized
from carte.image.store import ImageStore

SERVICE = "carte-test-registry"
ISSUER = "carte-test-issuer"
USER, PASSWORD = "carte", "t0ken"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """Issues RS256 JWTs granting whatever scopes a correctly authenticated caller asks for."""

    def __init__(self, base: Path) -> None:
        self.key, self.cert = base / "key.pem", base / "cert.pem"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-keyout", str(self.key), "-out", str(self.cert), "-subj", "/CN=carte-test"),
            ],
            check=True,
            capture_output=True,
        )
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        self.x5c = base64.b64encode(der).decode()
        self.requests: list[dict[str, list[str]]] = []

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {
            "iss": ISSUER,
            "sub": USER,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": str(now),
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(signature)}"


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningRegistry, TokenService]]:
    base = tmp_path_factory.mktemp("registry-token")
    service = TokenService(base)
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            service.requests.append(query)
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"token": service.token(query.get("scope", []))}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    realm = f"http://127.0.0.1:{server.server_address[1]}/token"
    auth = (
        f"auth: {{token: {{realm: '{realm}', service: {SERVICE}, issuer: {ISSUER}, "
        f"rootcertbundle: {service.cert}}}}}\n"
    )
    try:
        for running in start_registry(base / "registry", None, extra_config=auth):
            yield running, service
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_bearer_token_push_pull_and_mount(
    tmp_path: Path, token_registry: tuple[RunningRegistry, TokenService]
) -> None:
    registry, service = token_registry
    store = ImageStore(tmp_path / "root")
    credentials = CredentialStore(tmp_path / "auth.json")
    image = make_image(store, [make_tar([file("t", b"token")])], "tok:1")
    with pytest.raises(RegistryUnauthorized, match=f"run carte login {registry.host}"):
        Registry(registry.host, credentials=credentials).push(
            store, image, parse_reference(f"{registry.host}/team/tok:1")
        )
    credentials.save(registry.host, Credentials(username=USER, password=PASSWORD))
    client = Registry(registry.host, credentials=credentials)
    client.push(store, image, parse_reference(f"{registry.host}/team/tok:1"))
    events: list[Progress] = []
    client.push(store, image, parse_reference(f"{registry.host}/other/tok:1"), events.append)
    assert {e.action for e in events} == {"mounted"}
    assert any(
        sorted(q.get("scope", [])) == ["repository:other/tok:pull,push", "repository:team/tok:pull"]
        for q in service.requests
    )
    fresh = ImageStore(tmp_path / "fresh")
    pulled = client.pull(fresh, parse_reference(f"{registry.host}/other/tok:1"))
    assert pulled.id == image.id
    assert all(q.get("service") == [SERVICE] for q in service.requests)
