"""What the start paths import, read from `python -X importtime` (issue 16).

Every module a client command or a shim imports is paid for at each start (and, in the shim,
in resident memory per container). These tests list what those paths may import; one that
imports anything else fails, naming the modules, so a new import there is a decision: make it
lazy, or add it to the list here with the reason. Server-side packages (trio, quart,
hypercorn, pyroute2, ruamel.yaml, msgspec) are never allowed in the client, nor trio and the web
stack in the shim.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from carte.runtime.shim.client import interpreter_command

SERVER_STACK = {
    "trio", "quart", "quart_trio", "hypercorn", "pyroute2", "ruamel", "msgspec", "flask",
    "werkzeug", "jinja2", "asyncio", "h11", "h2", "wsproto",
}  # fmt: skip

# What a client command may import beyond a bare interpreter's start (`python -I -S -c pass`;
# the client runs without site here, so nothing site imports hides a module): argument
# parsing, JSON (with re, enum, collections), the unix-socket transport, os; not gettext and
# locale (argparse gets an untranslated stand-in: carte.cli.parser), contextlib or select.
CLIENT_STDLIB = {
    "__future__", "_collections", "_collections_abc", "_functools", "_json", "_operator",
    "_socket", "_sre", "_stat", "argparse", "collections", "copyreg", "enum", "functools",
    "genericpath", "itertools", "json", "keyword", "operator", "os", "posixpath", "re",
    "reprlib", "stat", "types", "warnings",
}  # fmt: skip
# The client started as the daemon starts shims: `python -I -S -c "...; main()"`.
CLIENT = interpreter_command()[1:]
# The client's own modules: the command framework, output, transport and the invoked
# command's module (carte.cli.commands.<area>), never the engine, runtime or daemon.
CLIENT_CARTE_PREFIXES = ("carte.cli.",)
CLIENT_CARTE = {"carte", "carte.__main__", "carte.cli"}
# Commands without flags (`version`, `ps`, `inspect NAME`) are dispatched without argparse
# (carte.cli.plain_arguments) and read the daemon's answer without the json package
# (carte.cli.compact_json): no re, no enum (~10 ms).
WITHOUT_PARSER = {("version",), ("info",), ("ps",), ("inspect", "web")}

# The resident shim (`carte shim monitor`, what each container keeps): sockets, select and
# JSON lines only; its runtime work runs in short helper processes.
MONITOR_STDLIB = {"__future__", "_json", "_socket", "fcntl", "select", "json"}
MONITOR_CARTE_PREFIXES = ("carte.runtime.shim.",)
MONITOR_CARTE = {"carte", "carte.runtime", "carte.runtime.shim", "carte.runtime.logs"}


def imported_modules(*python_args: str) -> set[str]:
    """Modules `python -X importtime ARGS` imported (whatever its exit status)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *python_args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "[us]" not in line
    }


def interpreter_start(*flags: str) -> set[str]:
    return imported_modules(*flags, "-c", "pass")


def outside_list(
    modules: set[str],
    stdlib: set[str],
    carte: set[str],
    carte_prefixes: tuple[str, ...],
    start: set[str] | None = None,
) -> list[str]:
    """The modules not in the lists (modules of the interpreter's own `start` are allowed:
    `python -c pass` unless given)."""
    extra = modules - (interpreter_start() if start is None else start)
    return sorted(
        name
        for name in extra
        if name not in carte
        and not name.startswith(carte_prefixes)
        and name.split(".")[0] not in stdlib
    )


@pytest.mark.parametrize(
    "command",
    [["version"], ["ps"], ["inspect", "web"], ["images"], ["info"], ["ps", "-a"], ["run", "bb"]],
    ids=lambda c: " ".join(c),
)
def test_client_command_imports_only_the_listed_modules(tmp_path: Path, command: list[str]) -> None:
    modules = imported_modules(*CLIENT, "--host", f"unix://{tmp_path}/no-daemon.sock", *command)
    assert "carte.cli.transport" in modules, "the client did not run"
    server = sorted(m for m in modules if m.split(".")[0] in SERVER_STACK)
    assert not server, f"`carte {command[0]}` imports the server stack: {server}"
    bare = interpreter_start("-I", "-S")
    extra = outside_list(modules, CLIENT_STDLIB, CLIENT_CARTE, CLIENT_CARTE_PREFIXES, bare)
    assert not extra, f"`carte {command[0]}` imports modules outside the client's list: {extra}"
    client = ("carte.cli", "carte.__main__")
    others = sorted(m for m in modules if m.startswith("carte.") and not m.startswith(client))
    assert not others, f"the client imports the engine's modules: {others}"
    if tuple(command) in WITHOUT_PARSER:
        assert "argparse" not in modules, f"`carte {command[0]}` built an argument parser"
        heavy = sorted({"json", "re", "enum"} & modules)
        assert not heavy, f"`carte {command[0]}` imports {heavy}"


def test_help_and_usage_errors_read_as_with_pythons_gettext() -> None:
    """The client gives argparse a stand-in for gettext (no locale, no catalog search); what
    argparse prints must not change for it: help of a command group, a bad flag, a missing
    argument."""
    with_gettext = "import gettext, sys; from carte.__main__ import main; main()"
    for command in (["container"], ["ps", "--bogus"], ["inspect"], ["network", "--help"]):
        ours, python = (
            subprocess.run([sys.executable, *start, *command], capture_output=True, text=True)
            for start in (["-m", "carte"], ["-c", with_gettext])
        )
        assert ours.returncode == python.returncode, command
        assert ours.stderr == python.stderr, command
        assert ours.stdout == python.stdout, command
        assert "None" not in ours.stdout + ours.stderr, command


def test_resident_shim_imports_only_the_listed_modules() -> None:
    modules = imported_modules("-c", "import carte.runtime.shim._monitor")
    assert "carte.runtime.shim._monitor" in modules
    server = sorted(m for m in modules if m.split(".")[0] in SERVER_STACK)
    assert not server, f"the resident shim imports the server stack: {server}"
    extra = outside_list(modules, MONITOR_STDLIB, MONITOR_CARTE, MONITOR_CARTE_PREFIXES)
    assert not extra, f"the resident shim imports modules outside its list: {extra}"


@pytest.mark.parametrize(
    "code",
    [
        "import carte.runtime.shim._create",
        "import carte.runtime.shim._factory as factory; factory._preload()",
        "import carte.runtime.cli",
    ],
    ids=["shim create", "shim factory", "runtime cli"],
)
def test_shim_and_runtime_never_import_the_server_stack(code: str) -> None:
    modules = imported_modules("-c", code)
    assert any(m.startswith("carte.runtime") for m in modules), "nothing was imported"
    server = sorted(m for m in modules if m.split(".")[0] in SERVER_STACK - {"msgspec"})
    assert not server, f"`{code}` imports the server stack: {server}"
    daemon_side = sorted(
        m for m in modules if m.startswith(("carte.engine", "carte.handlers", "carte.daemon"))
    )
    assert not daemon_side, f"`{code}` imports the daemon's modules: {daemon_side}"


def test_runtime_processes_skip_typing_extensions(tmp_path: Path) -> None:
    """`carte runtime`, the shim and its exec helpers import msgspec without typing_extensions
    (msgspec falls back to `typing`), so they never pay for `inspect` and its imports (~8 ms
    of CPU at each start: each health probe starts an exec helper)."""
    modules = imported_modules("-m", "carte", "runtime", "--root", str(tmp_path), "list")
    assert "msgspec" in modules, "the runtime did not run"
    heavy = sorted({"inspect", "ast", "dis", "tokenize"} & modules)
    assert not heavy, f"`carte runtime list` imports {heavy} (through typing_extensions?)"
