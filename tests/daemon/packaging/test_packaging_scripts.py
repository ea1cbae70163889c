"""The shell entry points: install.sh, tests/run and .ci/run parse and refuse bad input.

Running install.sh for real would replace a Carte installed on this machine, so the suite only
checks what it can without changing the host; the install itself is exercised by hand and by
the README's quick start on a fresh machine.
"""

from __future__ import annotations

import os
import subprocess

from support.daemon import REPO

SCRIPTS = ("install.sh", "tests/run", ".ci/run")


def test_scripts_are_executable_bash_without_syntax_errors() -> None:
    for script in SCRIPTS:
        path = REPO / script
        assert os.access(path, os.X_OK), script
        result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, (script, result.stderr)


def test_ci_runs_the_readme_test_command() -> None:
    assert "exec bash tests/run" in (REPO / ".ci/run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "./install.sh" in readme and "tests/run" in readme


def test_install_refuses_an_unknown_option_in_one_line() -> None:
    result = subprocess.run(
        [str(REPO / "install.sh"), "--frobnicate"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        'install.sh: unknown option "--frobnicate"; use --uninstall [--purge], '
        "--server URL --token T, or --help"
    ]


def test_install_joins_only_with_both_server_and_token() -> None:
    result = subprocess.run(
        [str(REPO / "install.sh"), "--server", "tcp://10.0.0.1:2376"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["install.sh: --server and --token go together"]


def test_install_help_describes_uninstall() -> None:
    result = subprocess.run(
        [str(REPO / "install.sh"), "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert "--uninstall" in result.stdout and "--purge" in result.stdout
