"""Reading /etc/passwd and /etc/group out of image layers (issue 11 item 2), in-process: a
FIFO, a device, an oversized file and a symlink out of the layer never block or escape;
numeric ids do without the files; whiteouts and the topmost layer win as before."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from carte.api.errors import InvalidArgument
from carte.handlers.containers import resolve_user

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\nextra:x:2000:app\n"


def layer(root: Path, passwd: str | None = PASSWD, group: str | None = GROUP) -> Path:
    (root / "etc").mkdir(parents=True)
    if passwd is not None:
        (root / "etc/passwd").write_text(passwd)
    if group is not None:
        (root / "etc/group").write_text(group)
    return root


def test_names_resolve_from_the_topmost_layer(tmp_path: Path) -> None:
    lower = layer(tmp_path / "lower")
    upper = layer(tmp_path / "upper", passwd=PASSWD.replace("1000:1000", "1001:1001"))
    user = resolve_user("app", [upper, lower])
    assert (user.uid, user.gid, user.additional_gids) == (1001, 1001, [2000])


def test_a_fifo_passwd_is_refused_at_once(tmp_path: Path) -> None:
    root = layer(tmp_path / "l", passwd=None)
    os.mkfifo(root / "etc/passwd")
    started = time.monotonic()
    with pytest.raises(InvalidArgument, match=r"/etc/passwd is not a regular file \(a FIFO\)"):
        resolve_user("app", [root])
    assert time.monotonic() - started < 1
    assert resolve_user("1000:1000", [root]).uid == 1000  # numeric ids need no file


def test_oversized_and_escaping_files(tmp_path: Path) -> None:
    root = layer(tmp_path / "big", passwd=None)
    with (root / "etc/passwd").open("wb") as big:
        big.truncate(5 * 1024 * 1024)
    with pytest.raises(InvalidArgument, match="over 4 MiB"):
        resolve_user("app", [root])
    host = layer(tmp_path / "host")
    escaping = layer(tmp_path / "escape", passwd=None, group=None)
    (escaping / "etc").rmdir()
    (escaping / "etc").symlink_to(host / "etc")  # resolved inside the layer: not the host's
    with pytest.raises(InvalidArgument, match='no user "app"'):
        resolve_user("app", [escaping])
