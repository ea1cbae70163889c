"""The cluster's PKI: one CA, certificates for the control plane, nodes and clients, join tokens.

Pure library (no I/O but the explicit file helpers, no trio), on the ``cryptography`` package;
nothing here is hand-rolled crypto. Keys are ECDSA P-256. Every certificate carries its role
in the subject's OU (``control-plane``, ``node``, ``client``) and its name in the CN, so the
TLS layer learns who is calling from the verified peer certificate alone (`identify`).

Joining, as kubeadm does it: a token ``CARTE1-<ca-hash>-<secret>`` names the CA by the
SHA-256 of its certificate (DER, hex), so the joining node can pin the CA it is handed
(`pin_ca`) before trusting it, and proves itself with the secret, which the control plane
keeps only hashed (`TokenBook`). The node makes its own key and sends a CSR
(`make_node_key`, `make_csr`); `ClusterCA.sign_node_csr` checks it and signs: the node's
private key never leaves the node. `RevocationList` holds the serials of refused certificates.

Errors: `Refused` (a token or certificate that must not be accepted; the message names why
and the fix) and `InvalidArgument` (malformed input: not a token, not PEM).
"""

from __future__ import annotations

import builtins
import datetime
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from carte.api.errors import CarteError, InvalidArgument, NotFound

Role = Literal["control-plane", "node", "client"]
ROLES: tuple[Role, ...] = ("control-plane", "node", "client")
TOKEN_PREFIX = "CARTE1"
CA_VALID_DAYS = 3650
LEAF_VALID_DAYS = 365
_TOKEN = re.compile(r"^CARTE1-(?P<ca>[0-9a-f]{64})-(?P<secret>[0-9a-f]{32})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class Refused(CarteError):
    """A token or certificate the cluster does not accept (unknown, expired, revoked, foreign)."""

    code: ClassVar[str] = "permission_denied"
    status: ClassVar[int] = 403


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise InvalidArgument(
            f'{what} name "{name}" is not valid; use 1-63 letters, digits, ".", "_" or "-"'
        )


# --- keys and PEM -----------------------------------------------------------------------------


def make_node_key() -> bytes:
    """A new private key (PEM, unencrypted) for a node or client; keep it on that machine."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise InvalidArgument(f"not a PEM private key ({error}); check the key file") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument("the private key is not an EC key; make it with make_node_key")
    return key


def load_certificate(pem: bytes) -> x509.Certificate:
    """Parse one PEM certificate; InvalidArgument if it is not one."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise InvalidArgument(f"not a PEM certificate ({error}); check the file") from None


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def ca_hash(ca_pem: bytes) -> str:
    """SHA-256 of the CA certificate's DER encoding, hex: what a join token pins."""
    der = load_certificate(ca_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def _subject_alt_names(addresses: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for address in addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            names.append(x509.DNSName(address))
    return names


# --- certificate signing requests (node side) -------------------------------------------------


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """Digital signatures always; a CA also signs certificates and CRLs, a node's leaf agrees
    keys (ECDHE) instead."""
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        key_agreement=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        encipher_only=False,
        decipher_only=False,
    )


def make_csr(key_pem: bytes, name: str, addresses: Sequence[str] = ()) -> bytes:
    """A CSR (PEM) for ``name`` with its ``addresses`` (IPs or DNS names) as SANs."""
    _check_name(name, "node")
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    )
    if addresses:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(_subject_alt_names(addresses)), critical=False
        )
    csr = builder.sign(_load_key(key_pem), hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


# --- identities -------------------------------------------------------------------------------


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    """Who a verified certificate speaks for."""

    name: str
    role: Role
    serial: int
    not_after: datetime.datetime


class Issued(msgspec.Struct, frozen=True, kw_only=True):
    """A certificate and, when the CA made the key too, its key (None for a signed CSR)."""

    cert: bytes
    key: bytes | None
    serial: int


def identify(cert_pem: bytes) -> Identity:
    """The name and role a Carte certificate carries (not verified: see `ClusterCA.verify`)."""
    cert = load_certificate(cert_pem)
    return _identity(cert)


def _identity(cert: x509.Certificate) -> Identity:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    role = str(units[0].value) if units else ""
    if not names or role not in ROLES:
        raise Refused(
            f"certificate {cert.serial_number:x} is not a Carte cluster certificate (no name "
            "or role); get one with carte node join or carte cluster init"
        )
    return Identity(
        name=str(names[0].value),
        role=role,  # checked against ROLES above
        serial=cert.serial_number,
        not_after=cert.not_valid_after_utc,
    )


# --- revocation -------------------------------------------------------------------------------


class Revoked(msgspec.Struct, frozen=True, kw_only=True):
    serial: int
    name: str
    at: datetime.datetime
    reason: str = ""


class RevocationList(msgspec.Struct, kw_only=True):
    """Serials of certificates the cluster refuses although they are not expired."""

    revoked: list[Revoked] = []

    def revoke(
        self, identity: Identity, reason: str = "", *, now: datetime.datetime | None = None
    ) -> None:
        if not self.is_revoked(identity.serial):
            self.revoked.append(
                Revoked(serial=identity.serial, name=identity.name, at=now or _now(), reason=reason)
            )

    def is_revoked(self, serial: int) -> bool:
        return any(entry.serial == serial for entry in self.revoked)

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> RevocationList:
        return msgspec.json.decode(data, type=cls)


# --- the CA -----------------------------------------------------------------------------------


class ClusterCA:
    """The cluster's certificate authority: its certificate and private key (PEM)."""

    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        self.cert = load_certificate(cert_pem)
        self._key = _load_key(key_pem)
        if self.cert.public_key() != self._key.public_key():
            raise InvalidArgument("the CA key does not match the CA certificate; check ca.key")
        self.cert_pem = _pem(self.cert)
        self.key_pem = key_pem

    @classmethod
    def create(
        cls,
        name: str = "carte-cluster",
        *,
        valid_days: int = CA_VALID_DAYS,
        now: datetime.datetime | None = None,
    ) -> ClusterCA:
        """A new self-signed CA (valid ``valid_days``) that may sign only leaf certificates."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Carte"),
            ]
        )
        start = (now or _now()) - datetime.timedelta(minutes=5)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(signs_certificates=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cls(_pem(cert), key_pem)

    @property
    def hash(self) -> str:
        """What join tokens carry: SHA-256 of this CA certificate (DER), hex."""
        return ca_hash(self.cert_pem)

    # --- issuing ------------------------------------------------------------------------------

    def issue_server(
        self,
        name: str,
        addresses: Sequence[str],
        *,
        valid_days: int = LEAF_VALID_DAYS,
        now: datetime.datetime | None = None,
    ) -> Issued:
        """The control plane's certificate and key: serves TLS for ``addresses`` (IPs or DNS
        names, at least one) and also authenticates it as a client of other daemons."""
        _check_name(name, "control-plane")
        if not addresses:
            raise InvalidArgument(
                "a control-plane certificate needs the addresses clients dial (IPs or DNS names)"
            )
        key_pem = make_node_key()
        key = _load_key(key_pem)
        cert = self._sign(key.public_key(), name, "control-plane", addresses, valid_days, now)
        return Issued(cert=_pem(cert), key=key_pem, serial=cert.serial_number)

    def issue_client(
        self, name: str, *, valid_days: int = LEAF_VALID_DAYS, now: datetime.datetime | None = None
    ) -> Issued:
        """A client certificate and key for an operator's ``carte -H tcp://...``."""
        _check_name(name, "client")
        key_pem = make_node_key()
        cert = self._sign(_load_key(key_pem).public_key(), name, "client", (), valid_days, now)
        return Issued(cert=_pem(cert), key=key_pem, serial=cert.serial_number)

    def sign_node_csr(
        self,
        csr_pem: bytes,
        name: str,
        *,
        valid_days: int = LEAF_VALID_DAYS,
        now: datetime.datetime | None = None,
    ) -> Issued:
        """Sign a joining node's CSR as node ``name`` (the CSR's CN must be that name).

        The SANs are the CSR's (the node's own addresses); everything else (role, usages,
        validity) is the CA's choice, never the CSR's. Raises Refused for a CSR whose
        signature does not verify or that names another node.
        """
        _check_name(name, "node")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as error:
            raise InvalidArgument(
                f"not a PEM certificate request ({error}); send make_csr's output"
            ) from None
        if not csr.is_signature_valid:
            raise Refused(
                "the certificate request's signature does not verify; "
                "make a new CSR with the node's key"
            )
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        asked = str(names[0].value) if names else ""
        if asked != name:
            raise Refused(
                f'the certificate request is for "{asked}", not node "{name}"; '
                "make the CSR with the node's name"
            )
        try:
            sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            addresses = [str(v) for v in sans.get_values_for_type(x509.IPAddress)] + list(
                sans.get_values_for_type(x509.DNSName)
            )
        except x509.ExtensionNotFound:
            addresses = []
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise Refused(
                "the certificate request's key is not an EC key; make the key with make_node_key"
            )
        cert = self._sign(public_key, name, "node", addresses, valid_days, now)
        return Issued(cert=_pem(cert), key=None, serial=cert.serial_number)

    def _sign(
        self,
        public_key: ec.EllipticCurvePublicKey,
        name: str,
        role: Role,
        addresses: Iterable[str],
        valid_days: int,
        now: datetime.datetime | None,
    ) -> x509.Certificate:
        start = (now or _now()) - datetime.timedelta(minutes=5)
        end = min(start + datetime.timedelta(days=valid_days), self.cert.not_valid_after_utc)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if role != "client":
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Carte"),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    ]
                )
            )
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(signs_certificates=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        sans = _subject_alt_names(addresses)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self._key, hashes.SHA256())

    # --- verifying ----------------------------------------------------------------------------

    def verify(
        self,
        cert_pem: bytes,
        *,
        revoked: RevocationList | None = None,
        roles: Sequence[Role] = ROLES,
        now: datetime.datetime | None = None,
    ) -> Identity:
        """Who ``cert_pem`` is, if this CA signed it, it is in its validity window, not
        revoked and of one of ``roles``; raises Refused saying which check failed."""
        cert = load_certificate(cert_pem)
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            raise Refused(
                f"certificate {cert.serial_number:x} was not issued by this cluster's CA; "
                "join this cluster (carte node join) to get one"
            ) from None
        identity = _identity(cert)
        moment = now or _now()
        if moment > cert.not_valid_after_utc:
            raise Refused(
                f'certificate of {identity.role} "{identity.name}" expired on '
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; renew it (join again)"
            )
        if moment < cert.not_valid_before_utc:
            raise Refused(
                f'certificate of {identity.role} "{identity.name}" is not valid before '
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check the clocks"
            )
        if revoked is not None and revoked.is_revoked(cert.serial_number):
            raise Refused(
                f'certificate of {identity.role} "{identity.name}" '
                f"(serial {cert.serial_number:x}) was revoked; join again with a new token"
            )
        if identity.role not in roles:
            raise Refused(
                f'"{identity.name}" holds a {identity.role} certificate; this needs '
                f"{' or '.join(roles)}"
            )
        return identity


# --- join tokens ------------------------------------------------------------------------------


class Token(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed join token: the CA it pins and its secret."""

    ca_hash: str
    secret: str


def parse_join_token(token: str) -> Token:
    """Split ``CARTE1-<ca-hash>-<secret>``; InvalidArgument (the token not echoed) if malformed."""
    match = _TOKEN.match(token.strip())
    if not match:
        raise InvalidArgument(
            "the join token is malformed: expected CARTE1-<64 hex>-<32 hex>; "
            "copy it again from carte cluster join-token"
        )
    return Token(ca_hash=match["ca"], secret=match["secret"])


def pin_ca(token: str, ca_pem: bytes) -> x509.Certificate:
    """The CA certificate a joining node was handed, if it is the one its token names.

    Raises Refused when the hash differs (a different cluster, or someone in the middle).
    """
    parsed = parse_join_token(token)
    found = ca_hash(ca_pem)
    if not hmac.compare_digest(found, parsed.ca_hash):
        raise Refused(
            f"the server's CA (sha256 {found[:16]}...) is not the one the join token names "
            f"({parsed.ca_hash[:16]}...); check --server, or get a token from this cluster"
        )
    return load_certificate(ca_pem)


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A join token as the control plane keeps it: the secret only hashed."""

    id: str
    """First 8 hex digits of the secret's hash: how `list`, `revoke` and logs name it."""
    secret_hash: str
    created: datetime.datetime
    expires: datetime.datetime | None = None
    revoked: datetime.datetime | None = None

    def state(self, now: datetime.datetime) -> Literal["active", "expired", "revoked"]:
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"


class TokenBook(msgspec.Struct, kw_only=True):
    """The cluster's join tokens (store it as `encode` bytes; the secrets are not in it)."""

    ca_hash: str
    tokens: builtins.list[TokenRecord] = []

    def create(
        self, *, ttl: datetime.timedelta | None = None, now: datetime.datetime | None = None
    ) -> str:
        """A new token (the only time its secret is seen); ``ttl`` None: valid until revoked."""
        moment = now or _now()
        secret = secrets.token_hex(16)
        digest = _secret_hash(secret)
        self.tokens.append(
            TokenRecord(
                id=digest[:8],
                secret_hash=digest,
                created=moment,
                expires=moment + ttl if ttl is not None else None,
            )
        )
        return f"{TOKEN_PREFIX}-{self.ca_hash}-{secret}"

    def list(self) -> builtins.list[TokenRecord]:
        """Every token ever made, revoked and expired ones too (secrets are not kept)."""
        return builtins.list(self.tokens)

    def revoke(self, token_id: str, *, now: datetime.datetime | None = None) -> TokenRecord:
        """Revoke the token ``token_id`` (its id, or the whole token); NotFound if unknown."""
        wanted = token_id
        if token_id.startswith(TOKEN_PREFIX + "-"):
            wanted = _secret_hash(parse_join_token(token_id).secret)[:8]
        for index, record in enumerate(self.tokens):
            if record.id == wanted:
                if record.revoked is None:
                    record = msgspec.structs.replace(record, revoked=now or _now())
                    self.tokens[index] = record
                return record
        raise NotFound(f'no join token "{wanted}"; see carte cluster join-token --list')

    def rotate(
        self, *, ttl: datetime.timedelta | None = None, now: datetime.datetime | None = None
    ) -> str:
        """Revoke every active token and create a new one (returned)."""
        moment = now or _now()
        for record in self.tokens:
            if record.state(moment) == "active":
                self.revoke(record.id, now=moment)
        return self.create(ttl=ttl, now=moment)

    def check(self, token: str, *, now: datetime.datetime | None = None) -> TokenRecord:
        """The record of a valid ``token``; Refused if it is for another CA, unknown,
        expired or revoked (the message never repeats the secret)."""
        parsed = parse_join_token(token)
        if not hmac.compare_digest(parsed.ca_hash, self.ca_hash):
            raise Refused(
                "the join token belongs to another cluster (its CA hash differs); "
                "get a token from this cluster: carte cluster join-token"
            )
        digest = _secret_hash(parsed.secret)
        for record in self.tokens:
            if hmac.compare_digest(record.secret_hash, digest):
                state = record.state(now or _now())
                if state != "active":
                    raise Refused(
                        f"join token {record.id} is {state}; "
                        "get a new one: carte cluster join-token"
                    )
                return record
        raise Refused(
            "the join token is not known to this cluster; get one: carte cluster join-token"
        )

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> TokenBook:
        return msgspec.json.decode(data, type=cls)


# --- files ------------------------------------------------------------------------------------


def write_bundle(directory: Path, *, ca: bytes, cert: bytes, key: bytes) -> None:
    """Write ``ca.pem``, ``cert.pem`` and ``key.pem`` (0600) as Docker's --tlsverify reads
    them from ~/.docker; the directory is made 0700. Each file is replaced atomically."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for filename, data, mode in (
        ("ca.pem", ca, 0o644),
        ("cert.pem", cert, 0o644),
        ("key.pem", key, 0o600),
    ):
        partial = directory / f".{filename}.tmp"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, directory / filename)
