"""`COMMAND NAME...` is parsed without argparse (carte.cli.plain_arguments) into what argparse
would give; anything else goes to argparse, with its errors and help."""

from __future__ import annotations

from typing import Any

import pytest

from carte.cli.commands import Commands
from carte.cli.parser import COMMAND_MODULES, all_commands, build_parser, simple_arguments

WORDS = sorted({word for words in COMMAND_MODULES.values() for word in words})


def _comparable(namespace: Any) -> dict[str, Any]:
    values = dict(vars(namespace))
    run = values.pop("run", None)
    values["run"] = getattr(run, "__code__", run)  # each registration makes its own lambdas
    return values


def _with_argparse(argv: list[str]) -> dict[str, Any] | None:
    try:
        return _comparable(build_parser(argv).parse_args(argv))
    except SystemExit:
        return None


@pytest.mark.parametrize("word", WORDS)
def test_positionals_parse_as_argparse_parses_them(
    word: str, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = all_commands(word).entries.get(word)
    if isinstance(entry, Commands):  # a group: each of its commands, as `word sub NAME...`
        for sub in sorted(entry.entries):
            _check([word, sub], entry.entries[sub])
    else:
        _check([word], entry)
    capsys.readouterr()  # argparse's errors for the argv that do not fit


def _check(words: list[str], entry: Any) -> None:
    """The fast path's namespace for ``words`` and 0-3 names is argparse's, when it takes it."""
    if isinstance(entry, Commands):
        for sub in sorted(entry.entries):
            _check([*words, sub], entry.entries[sub])
        return
    # commands without arguments of their own (or only a trailing --format) read the
    # attributes argparse adds for those with getattr and a default
    partial = entry is None or getattr(entry.arguments, "format_only", entry.arguments is None)
    for names in ([], ["web"], ["web", "db"], ["web", "db", "x"]):
        argv = ["--host", "unix:///x.sock", *words, *names]
        fast = simple_arguments(argv)
        if fast is None:
            continue
        full = _with_argparse(argv)
        assert full is not None, f"{argv}: argparse refuses what the fast path took"
        if partial:
            full = {key: value for key, value in full.items() if key in vars(fast)}
        assert _comparable(fast) == full, argv


def test_ps_and_inspect_of_names_are_parsed_without_argparse() -> None:
    assert simple_arguments(["ps"]) is not None
    assert simple_arguments(["inspect", "web", "db"]) is not None
    assert simple_arguments(["--format", "json", "inspect", "web"]) is not None
    for argv in (["ps", "-a"], ["inspect"], ["inspect", "-f", "{{.Id}}", "web"], ["ps", "--"]):
        assert simple_arguments(argv) is None, argv
