"""The Dockerfile parser, word expansion, stage planning and .dockerignore matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from carte.build._stages import plan_stages
from carte.build._words import WordError, expand_word, key_values, split_words
from carte.build.dockerfile import DockerfileError, parse
from carte.cli.commands.build import IgnoreRules


def test_continuations_comments_and_line_numbers() -> None:
    dockerfile = parse(
        "# a leading comment\n"
        "FROM busybox\n"
        "\n"
        "RUN echo one \\\n"
        "# a comment inside the continuation\n"
        "    two \\\n"
        "\n"
        "    three\n"
        'cmd ["sh"]\n'
    )
    run, cmd = dockerfile.instructions[1:]
    assert (run.keyword, run.line, run.text) == ("RUN", 4, "echo one two three")
    assert (cmd.keyword, cmd.line, cmd.exec_form) == ("CMD", 9, ("sh",))


def test_escape_directive_changes_the_continuation_character() -> None:
    dockerfile = parse("# escape=`\nFROM busybox\nRUN echo C:\\path `\n  more\n")
    assert dockerfile.escape == "`"
    assert dockerfile.instructions[1].text == "echo C:\\path more"


def test_flags_and_json_forms() -> None:
    copy = parse('FROM b\nCOPY --from=build --chmod=0755 ["a b", "/x/"]\n').instructions[1]
    assert copy.flags == {"from": "build", "chmod": "0755"}
    assert copy.exec_form == ("a b", "/x/")
    shell_form = parse("FROM b\nCMD [not json\n").instructions[1]
    assert shell_form.exec_form is None and shell_form.text == "[not json"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM b\nRUN true\nRUNN echo\n", 'Dockerfile:3: unknown instruction "RUNN"'),
        ("FROM b\nCOPY --frmo=x a b\n", 'Dockerfile:2: COPY: unknown flag "--frmo"'),
        ("FROM b\nWORKDIR\n", "Dockerfile:2: WORKDIR needs arguments"),
        ("# just a comment\n", "Dockerfile: the file has no instructions"),
        ("# escape=x\nFROM b\n", "Dockerfile:1: escape directive"),
    ],
)
def test_syntax_errors_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as caught:
        parse(text)
    assert caught.value.message.startswith(message)
    assert "\n" not in caught.value.message


def test_word_expansion_and_quotes() -> None:
    env = {"A": "one", "EMPTY": "", "SPACED": "x y"}
    assert split_words("$A ${A}two '$A' \"$A\"", env) == ["one", "onetwo", "$A", "one"]
    assert split_words("${MISSING:-dflt} ${EMPTY:-dflt} ${A:+alt} ${MISSING:+alt}", env) == [
        "dflt",
        "dflt",
        "alt",
    ]
    assert split_words("$SPACED", env) == ["x y"]
    assert split_words("\\$A", env) == ["$A"]
    assert expand_word("  keep   inner  ", env) == "keep   inner"
    with pytest.raises(WordError):
        split_words("'open", env)


def test_env_and_label_pairs() -> None:
    assert key_values('K=v K2="two words" K3=$A', {"A": "a"}) == [
        ("K", "v"),
        ("K2", "two words"),
        ("K3", "a"),
    ]
    assert key_values("LEGACY value with spaces", {}) == [("LEGACY", "value with spaces")]


def test_stage_plan_scopes_global_args_and_finds_dependencies() -> None:
    dockerfile = parse(
        "ARG IMAGE=busybox\n"
        "FROM $IMAGE AS one\n"
        "FROM busybox AS two\n"
        "FROM busybox AS three\n"
        "COPY --from=one /a /a\n"
    )
    plan = plan_stages(dockerfile, {"IMAGE": "other"}, "three")
    assert plan.stages[0].base == "other"
    assert plan.needed == (0, 2)
    with pytest.raises(DockerfileError, match='target stage "four" is not defined'):
        plan_stages(dockerfile, {}, "four")
    with pytest.raises(DockerfileError, match="Dockerfile:1: RUN comes before the first FROM"):
        plan_stages(parse("RUN true\nFROM b\n"), {}, "")


def test_dockerignore_double_star_and_exceptions(tmp_path: Path) -> None:
    rules = IgnoreRules.from_text(
        "# c\n**/*.log\n!keep.log\n/build\nnode_modules\n!node_modules/x\n"
    )
    assert rules.excluded("a.log") and rules.excluded("deep/er/b.log")
    assert not rules.excluded("keep.log")
    assert rules.excluded("build/out.bin") and not rules.excluded("src/build.py")
    assert rules.excluded("node_modules/y") and not rules.excluded("node_modules/x")
    for name in ("keep.log", "drop.log", "node_modules/x", "node_modules/y", "src/a.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    assert rules.walk(str(tmp_path)) == ["keep.log", "node_modules/x", "src", "src/a.py"]


def test_heredocs_are_collected_with_their_bodies() -> None:
    dockerfile = parse(
        "FROM b\nRUN <<EOF\necho one\nEOF\nCOPY <<-'CONF' /etc/x\n\tkey=$V\n\tCONF\nCMD true\n"
    )
    run, copy, cmd = dockerfile.instructions[1:]
    assert run.heredocs[0].body == "echo one\n" and run.heredocs[0].expand
    assert copy.heredocs[0].name == "CONF" and copy.heredocs[0].body == "key=$V\n"
    assert not copy.heredocs[0].expand
    assert (cmd.keyword, cmd.line) == ("CMD", 8)
    with pytest.raises(DockerfileError, match="Dockerfile:2: RUN: heredoc <<EOF has no closing"):
        parse("FROM b\nRUN <<EOF\necho\n")
