"""The cluster PKI: CA, control-plane/node/client certificates, CSRs, join tokens, revocation.

The certificates are checked by a real mutual-TLS handshake with the standard ssl module
(the one the TCP listener uses), not only by our own `verify`.
"""

from __future__ import annotations

import datetime
import re
import socket
import ssl
import threading
from pathlib import Path

import pytest

from carte.api.errors import InvalidArgument, NotFound
from carte.cluster import (
    ClusterCA,
    Issued,
    Refused,
    RevocationList,
    TokenBook,
    identify,
    make_csr,
    make_node_key,
    parse_join_token,
    pin_ca,
    write_bundle,
)

NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def ca() -> ClusterCA:
    return ClusterCA.create()


def files(tmp_path: Path, name: str, ca: ClusterCA, issued: Issued, key: bytes) -> Path:
    write_bundle(tmp_path / name, ca=ca.cert_pem, cert=issued.cert, key=key)
    return tmp_path / name


def handshake(server_dir: Path, client_dir: Path, server_name: str) -> tuple[str, str]:
    """A TLS 1.3 handshake over a socketpair; returns (client CN seen by the server, cipher)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_dir / "cert.pem", server_dir / "key.pem")
    server_ctx.load_verify_locations(server_dir / "ca.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=str(client_dir / "ca.pem"))
    client_ctx.load_cert_chain(client_dir / "cert.pem", client_dir / "key.pem")
    left, right = socket.socketpair()
    seen: dict[str, object] = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(left, server_side=True) as tls:
                seen["peer"] = tls.getpeercert()
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as error:
            seen["error"] = error

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(right, server_hostname=server_name) as tls:
            tls.settimeout(5)
            assert tls.recv(2) == b"ok"
            cipher = tls.cipher()
    finally:
        thread.join(5)
    assert "error" not in seen, seen.get("error")
    peer = seen["peer"]
    subject = dict(item[0] for item in peer["subject"])  # type: ignore[index]
    return str(subject["commonName"]), str(cipher[0] if cipher else "")


def test_control_plane_and_node_talk_mutual_tls_with_the_node_key_never_leaving_it(
    ca: ClusterCA, tmp_path: Path
) -> None:
    server = ca.issue_server("cp1", ["10.9.0.1", "cp1.lan", "127.0.0.1"])
    assert server.key is not None
    node_key = make_node_key()  # made on the node; only the CSR travels
    csr = make_csr(node_key, "node-2", ["10.9.0.2"])
    assert b"PRIVATE" not in csr
    node = ca.sign_node_csr(csr, "node-2")
    assert node.key is None

    server_dir = files(tmp_path, "cp", ca, server, server.key)
    node_dir = files(tmp_path, "node", ca, node, node_key)
    assert (node_dir / "key.pem").stat().st_mode & 0o777 == 0o600
    assert node_dir.stat().st_mode & 0o777 == 0o700
    seen_cn, _ = handshake(server_dir, node_dir, "127.0.0.1")
    assert seen_cn == "node-2"
    assert handshake(server_dir, node_dir, "cp1.lan")[0] == "node-2"  # a DNS SAN works too

    assert ca.verify(node.cert).name == "node-2"
    assert ca.verify(node.cert).role == "node"
    assert ca.verify(server.cert, roles=["control-plane"]).name == "cp1"
    client = ca.issue_client("alice")
    assert ca.verify(client.cert).role == "client"
    with pytest.raises(Refused, match='"alice" holds a client certificate; this needs node'):
        ca.verify(client.cert, roles=["node"])


def test_a_server_name_outside_the_sans_is_refused_by_tls(ca: ClusterCA, tmp_path: Path) -> None:
    server = ca.issue_server("cp1", ["10.9.0.1"])
    client = ca.issue_client("alice")
    assert server.key is not None and client.key is not None
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        handshake(
            files(tmp_path, "cp", ca, server, server.key),
            files(tmp_path, "cli", ca, client, client.key),
            "127.0.0.1",
        )


def test_csrs_are_checked_and_the_ca_decides_the_rest(ca: ClusterCA) -> None:
    key = make_node_key()
    with pytest.raises(Refused, match=r'request is for "node-3", not node "node-2"'):
        ca.sign_node_csr(make_csr(key, "node-3"), "node-2")
    with pytest.raises(InvalidArgument, match="not a PEM certificate request"):
        ca.sign_node_csr(b"junk", "node-2")
    with pytest.raises(InvalidArgument, match=r'node name "\.\./x" is not valid'):
        make_csr(key, "../x")
    issued = ca.sign_node_csr(make_csr(key, "node-2", ["10.9.0.2", "n2.lan"]), "node-2")
    identity = identify(issued.cert)
    assert (identity.name, identity.role) == ("node-2", "node")


def test_foreign_expired_and_revoked_certificates_are_refused(ca: ClusterCA) -> None:
    other = ClusterCA.create("other-cluster")
    foreign = other.issue_client("mallory")
    with pytest.raises(Refused, match="was not issued by this cluster's CA"):
        ca.verify(foreign.cert)

    old = ca.issue_client("bob", valid_days=1, now=NOW - datetime.timedelta(days=10))
    with pytest.raises(Refused, match=r'client "bob" expired on 2026-11-28 11:55 UTC; renew'):
        ca.verify(old.cert, now=NOW)

    node = ca.sign_node_csr(make_csr(make_node_key(), "node-4"), "node-4")
    revoked = RevocationList()
    assert ca.verify(node.cert, revoked=revoked).name == "node-4"
    revoked.revoke(identify(node.cert), "node removed")
    revoked = RevocationList.decode(revoked.encode())  # as kept in the store
    with pytest.raises(Refused, match=r'node "node-4" \(serial [0-9a-f]+\) was revoked'):
        ca.verify(node.cert, revoked=revoked)
    assert ca.verify(ca.issue_client("carol").cert, revoked=revoked).name == "carol"


def test_join_tokens_pin_the_ca_and_keep_only_a_hash_of_the_secret(ca: ClusterCA) -> None:
    book = TokenBook(ca_hash=ca.hash)
    token = book.create(now=NOW)
    assert re.fullmatch(r"CARTE1-[0-9a-f]{64}-[0-9a-f]{32}", token)
    secret = parse_join_token(token).secret
    stored = book.encode()
    assert secret.encode() not in stored
    book = TokenBook.decode(stored)

    assert book.check(token, now=NOW).id == book.list()[0].id
    assert pin_ca(token, ca.cert_pem).serial_number == ca.cert.serial_number
    other = ClusterCA.create("other-cluster")
    with pytest.raises(Refused, match=r"server's CA .* is not the one the join token names"):
        pin_ca(token, other.cert_pem)
    with pytest.raises(Refused, match="belongs to another cluster"):
        TokenBook(ca_hash=other.hash).check(token)

    forged = token[:-32] + "0" * 32
    with pytest.raises(Refused, match="not known to this cluster") as refused:
        book.check(forged)
    assert "0" * 32 not in refused.value.message
    with pytest.raises(InvalidArgument, match="join token is malformed"):
        book.check("CARTE1-abc-def")


def test_tokens_expire_rotate_and_revoke(ca: ClusterCA) -> None:
    book = TokenBook(ca_hash=ca.hash)
    short = book.create(ttl=datetime.timedelta(hours=1), now=NOW)
    assert book.check(short, now=NOW + datetime.timedelta(minutes=59))
    with pytest.raises(Refused, match=r"join token [0-9a-f]{8} is expired"):
        book.check(short, now=NOW + datetime.timedelta(hours=1))

    first = book.create(now=NOW)
    second = book.rotate(now=NOW)
    with pytest.raises(Refused, match="is revoked"):
        book.check(first, now=NOW)
    assert book.check(second, now=NOW)
    assert [r.state(NOW) for r in book.list()] == ["revoked", "revoked", "active"]

    record = book.revoke(book.list()[-1].id, now=NOW)
    assert record.revoked == NOW
    with pytest.raises(Refused, match="is revoked"):
        book.check(second, now=NOW)
    with pytest.raises(NotFound, match='no join token "ffffffff"'):
        book.revoke("ffffffff")
