"""Parse a Dockerfile into instructions: directives, comments, line continuation, flags and
the JSON (exec) form. Variables are expanded later, by the builder (`build_words`), because
their values depend on the stage being built.

Every error is a `DockerfileError` naming the file, the line and the instruction, e.g.
`Dockerfile:7: unknown instruction "RUNN"; see https://docs.docker.com/reference/dockerfile/`.
"""

from __future__ import annotations

import json
import re

import msgspec

from carte.api.errors import InvalidArgument

KEYWORDS = frozenset(
    {
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    }
)
# The flags each instruction accepts (`--name=value`); anything else is an error.
FLAGS: dict[str, frozenset[str]] = {
    "FROM": frozenset({"platform"}),
    "COPY": frozenset({"from", "chown", "chmod", "link", "parents", "exclude"}),
    "ADD": frozenset({"chown", "chmod", "link", "checksum", "keep-git-dir", "exclude"}),
    "RUN": frozenset({"network", "security", "mount"}),
    "HEALTHCHECK": frozenset({"interval", "timeout", "start-period", "start-interval", "retries"}),
}
HEREDOC_FORMS = frozenset({"RUN", "COPY", "ADD"})
# A heredoc name is a word: letters, digits, `_`, `.` and `-` (`COPY <<robots.txt /srv/`).
HEREDOC_NAME = r"[A-Za-z_][A-Za-z0-9_.-]*"
_HEREDOC = re.compile(r"<<(-?)([\"']?)(" + HEREDOC_NAME + r")\2")
# Flags an instruction may give more than once (`RUN --mount=... --mount=...`).
REPEATABLE = frozenset({"mount", "exclude"})
JSON_FORMS = frozenset({"RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"})
_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(.*?)\s*$")
_FLAG = re.compile(r"--([a-z][a-z-]*)(?:=(.*))?$")


class DockerfileError(InvalidArgument):
    """A Dockerfile that cannot be built as written; the message names file and line."""


class Heredoc(msgspec.Struct, frozen=True, kw_only=True):
    """`<<NAME` ... `NAME` after a RUN, COPY or ADD line: its body, newline-terminated."""

    name: str
    body: str
    expand: bool  # unquoted names expand variables in the body (COPY); quoted ones do not


class Instruction(msgspec.Struct, frozen=True, kw_only=True):
    """One instruction with its continuation lines joined.

    `text` is everything after the keyword and its flags (unexpanded); `exec_form` is the
    JSON array form when the instruction was written that way; `original` is the source as
    written on one line, for progress output and cache keys.
    """

    keyword: str
    text: str
    flags: dict[str, str]
    exec_form: tuple[str, ...] | None
    line: int
    original: str
    file: str
    heredocs: tuple[Heredoc, ...] = ()
    repeated: dict[str, tuple[str, ...]] = {}  # every value of a repeatable flag, in order

    def values(self, flag: str) -> tuple[str, ...]:
        """Every value given for `flag` (`--mount` may appear several times)."""
        if flag in self.repeated:
            return self.repeated[flag]
        return (self.flags[flag],) if flag in self.flags else ()

    def error(self, problem: str) -> DockerfileError:
        """An error about this instruction, naming file, line and keyword."""
        return DockerfileError(f"{self.file}:{self.line}: {self.keyword}: {problem}")


class Dockerfile(msgspec.Struct, frozen=True, kw_only=True):
    file: str
    escape: str
    instructions: tuple[Instruction, ...]


def parse(source: str, file: str = "Dockerfile") -> Dockerfile:
    """Parse the text of a Dockerfile. Raises `DockerfileError` (file:line) for bad syntax."""
    lines = source.splitlines()
    escape, first = _directives(lines, file)
    instructions: list[Instruction] = []
    index = first
    while index < len(lines):
        start = index
        raw = lines[index]
        index += 1
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        joined = stripped
        while _continues(joined, escape):
            joined = joined.rstrip()[:-1]
            # comment and empty lines inside a continuation are dropped, as Docker does
            while index < len(lines) and (
                not lines[index].strip() or lines[index].strip().startswith("#")
            ):
                index += 1
            if index >= len(lines):
                break
            joined += lines[index].strip()
            index += 1
        joined = joined.strip()
        instruction = _instruction(joined, start + 1, file, escape)
        if instruction.keyword in HEREDOC_FORMS:
            heredocs, index = _heredocs(instruction, lines, index)
            instruction = msgspec.structs.replace(instruction, heredocs=heredocs)
        instructions.append(instruction)
    if not instructions:
        raise DockerfileError(f"{file}: the file has no instructions; start it with FROM")
    return Dockerfile(file=file, escape=escape, instructions=tuple(instructions))


def parse_instruction(text: str, *, line: int, file: str, escape: str = "\\") -> Instruction:
    """Parse one instruction written on one line (ONBUILD triggers are stored that way)."""
    return _instruction(text.strip(), line, file, escape)


def _heredocs(
    instruction: Instruction, lines: list[str], index: int
) -> tuple[tuple[Heredoc, ...], int]:
    """Read the bodies of the heredocs the instruction opens; return them and the next line."""
    found: list[Heredoc] = []
    if instruction.exec_form is not None:
        return (), index
    for match in _HEREDOC.finditer(instruction.text):
        strip_tabs, quote, name = match.group(1) == "-", match.group(2), match.group(3)
        body: list[str] = []
        while True:
            if index >= len(lines):
                raise instruction.error(f"heredoc <<{name} has no closing {name} line")
            line = lines[index]
            index += 1
            if strip_tabs:
                line = line.lstrip("\t")
            if line == name:
                break
            body.append(line)
        text = "".join(item + "\n" for item in body)
        found.append(Heredoc(name=name, body=text, expand=not quote))
    return tuple(found), index


def _continues(text: str, escape: str) -> bool:
    return text.rstrip().endswith(escape)


def _directives(lines: list[str], file: str) -> tuple[str, int]:
    """Parser directives (`# escape=`, `# syntax=`) may only open the file."""
    escape = "\\"
    seen: set[str] = set()
    for number, line in enumerate(lines):
        match = _DIRECTIVE.fullmatch(line.strip())
        if match is None:
            return escape, number
        name, value = match.group(1).lower(), match.group(2)
        if name in seen:
            raise DockerfileError(f'{file}:{number + 1}: directive "{name}" is given twice')
        seen.add(name)
        if name == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(
                    f'{file}:{number + 1}: escape directive "{value}" is invalid; use \\ or `'
                )
            escape = value
    return escape, len(lines)


def _instruction(joined: str, line: int, file: str, escape: str) -> Instruction:
    keyword_text, _, rest = joined.partition(" ")
    if "\t" in keyword_text:
        keyword_text, _, tail = keyword_text.partition("\t")
        rest = tail + " " + rest
    keyword = keyword_text.upper()
    if keyword not in KEYWORDS:
        raise DockerfileError(
            f'{file}:{line}: unknown instruction "{keyword_text}"; '
            "see https://docs.docker.com/reference/dockerfile/ for the instruction set"
        )
    rest = rest.strip()
    flags: dict[str, str] = {}
    repeated: dict[str, list[str]] = {}
    allowed = FLAGS.get(keyword, frozenset())
    while rest.startswith("--") and keyword != "ONBUILD":
        token, _, remainder = rest.partition(" ")
        match = _FLAG.fullmatch(token)
        if match is None or match.group(1) not in allowed:
            name = token.split("=", 1)[0]
            accepted = ", ".join(f"--{f}" for f in sorted(allowed)) or "no flags"
            raise DockerfileError(
                f'{file}:{line}: {keyword}: unknown flag "{name}"; {keyword} accepts {accepted}'
            )
        value = match.group(2) if match.group(2) is not None else "true"
        if match.group(1) in flags and match.group(1) not in REPEATABLE:
            raise DockerfileError(
                f"{file}:{line}: {keyword}: --{match.group(1)} is given twice; give it once"
            )
        flags[match.group(1)] = value
        if match.group(1) in REPEATABLE:
            repeated.setdefault(match.group(1), []).append(value)
        rest = remainder.strip()
    exec_form: tuple[str, ...] | None = None
    if keyword in JSON_FORMS and rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            exec_form = tuple(value)
    if not rest:
        raise DockerfileError(f"{file}:{line}: {keyword} needs arguments")
    return Instruction(
        keyword=keyword,
        text=rest,
        flags=flags,
        exec_form=exec_form,
        line=line,
        original=joined,
        file=file,
        repeated={name: tuple(values) for name, values in repeated.items()},
    )
