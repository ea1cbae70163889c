"""Registry credentials and authentication challenges.

Credentials live in `~/.config/carte/auth.json` (mode 0600, Docker's `auths` format:
`{"auths": {"HOST": {"auth": base64("user:password")}}}`), rewritten atomically.
`WWW-Authenticate` challenges are parsed into a scheme and its parameters.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
from pathlib import Path

import msgspec

from carte.image.errors import InvalidImage

_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


class Challenge(msgspec.Struct, frozen=True, kw_only=True):
    scheme: str  # lowercase: "bearer" or "basic"
    params: dict[str, str]


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    username: str
    password: str


class _Entry(msgspec.Struct, kw_only=True, omit_defaults=True):
    auth: str = ""


class _AuthFile(msgspec.Struct, kw_only=True):
    auths: dict[str, _Entry] = msgspec.field(default_factory=dict)


_file_decoder = msgspec.json.Decoder(_AuthFile)
_encoder = msgspec.json.Encoder()


def default_auth_path() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "carte" / "auth.json"


def parse_challenge(header: str) -> Challenge:
    """Parse one `WWW-Authenticate` value such as `Bearer realm="...",service="..."`."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(rest):
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare or ""
        params[match.group(1).lower()] = value
    return Challenge(scheme=scheme.lower(), params=params)


class CredentialStore:
    """Logins per registry host, kept in a 0600 JSON file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_auth_path()

    def _read(self) -> _AuthFile:
        try:
            return _file_decoder.decode(self.path.read_bytes())
        except FileNotFoundError:
            return _AuthFile()
        except msgspec.DecodeError as exc:
            raise InvalidImage(
                f"credentials file {self.path} is not valid: {exc}; fix or remove it"
            ) from None

    def _write(self, data: _AuthFile) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".auth-")
        try:
            with open(fd, "wb") as out:
                out.write(_encoder.encode(data))
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temp, 0o600)
            os.replace(temp, self.path)
        finally:
            Path(temp).unlink(missing_ok=True)

    def get(self, host: str) -> Credentials | None:
        entry = self._read().auths.get(host)
        if entry is None or not entry.auth:
            return None
        try:
            user, _, password = base64.b64decode(entry.auth).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidImage(
                f"credentials for {host} in {self.path} are not valid; run carte login {host}"
            ) from None
        return Credentials(username=user, password=password)

    def save(self, host: str, credentials: Credentials) -> None:
        data = self._read()
        token = f"{credentials.username}:{credentials.password}".encode()
        data.auths[host] = _Entry(auth=base64.b64encode(token).decode())
        self._write(data)

    def remove(self, host: str) -> bool:
        """Forget a host's login; False if there was none."""
        data = self._read()
        if data.auths.pop(host, None) is None:
            return False
        self._write(data)
        return True


class SuppliedCredentials(CredentialStore):
    """One login handed in with a request (the daemon side): read-only, never touches disk."""

    def __init__(self, host: str, credentials: Credentials | None) -> None:
        super().__init__(Path("/nonexistent/carte-supplied-credentials"))
        self._host = host
        self._credentials = credentials

    def get(self, host: str) -> Credentials | None:
        return self._credentials if host == self._host else None

    def save(self, host: str, credentials: Credentials) -> None:
        raise NotImplementedError("supplied credentials are not stored")

    def remove(self, host: str) -> bool:
        raise NotImplementedError("supplied credentials are not stored")
