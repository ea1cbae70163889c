"""Split a parsed Dockerfile into stages, scope its ARGs, and pick the stages a target needs.

ARG scoping is Docker's: ARGs before the first FROM are visible only in FROM lines (a stage
sees one only after re-declaring it with `ARG NAME`); each stage has its own ARGs.
"""

from __future__ import annotations

import msgspec

from carte.build._words import WordError, split_words
from carte.build.dockerfile import Dockerfile, DockerfileError, Instruction

# Docker's predefined args: usable with --build-arg without an ARG line, never warned about.
PROXY_ARGS = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)


class Stage(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    name: str  # lower-case `AS` name, or "" when unnamed
    source: Instruction  # the FROM line
    base: str  # the FROM image, expanded with the global ARGs
    instructions: tuple[Instruction, ...]


class StagePlan(msgspec.Struct, frozen=True, kw_only=True):
    stages: tuple[Stage, ...]
    global_args: dict[str, str]  # values for FROM lines
    declared: frozenset[str]  # every ARG name in the file (for the unused --build-arg warning)
    needed: tuple[int, ...]  # indexes of the stages to build, in order
    target: int


def plan_stages(dockerfile: Dockerfile, build_args: dict[str, str], target: str = "") -> StagePlan:
    """The stages and which to build for `target` (default: the last stage).

    Raises `DockerfileError` naming the line for a bad FROM, an instruction before FROM, or an
    unknown `--target`.
    """
    escape = dockerfile.escape
    automatic = platform_args()
    global_args: dict[str, str] = dict(automatic)
    declared: set[str] = set(automatic)
    groups: list[tuple[Instruction, list[Instruction]]] = []
    for instruction in dockerfile.instructions:
        if instruction.keyword == "FROM":
            groups.append((instruction, []))
        elif not groups:
            if instruction.keyword != "ARG":
                raise DockerfileError(
                    f"{instruction.file}:{instruction.line}: {instruction.keyword} comes before "
                    "the first FROM; only ARG may (start the build stage with FROM)"
                )
            for name, default in arg_definitions(instruction, global_args, escape):
                declared.add(name)
                value = build_args.get(name, default)
                if value is not None:
                    global_args[name] = value
        else:
            groups[-1][1].append(instruction)
            if instruction.keyword == "ARG":
                for name, _ in arg_definitions(instruction, {}, escape):
                    declared.add(name)
    stages: list[Stage] = []
    for index, (source, body) in enumerate(groups):
        try:
            words = split_words(source.text, global_args, escape)
        except WordError as error:
            raise source.error(str(error)) from None
        if len(words) == 3 and words[1].lower() == "as":
            base, name = words[0], words[2].lower()
        elif len(words) == 1:
            base, name = words[0], ""
        else:
            raise source.error('expected "FROM IMAGE [AS NAME]"')
        if not base:
            raise source.error("the image name expands to nothing; check the ARG it uses")
        if "platform" in source.flags:
            _check_platform(source, global_args, escape)
        if name and any(stage.name == name for stage in stages):
            raise source.error(f'stage name "{name}" is used twice; name each stage once')
        stages.append(
            Stage(index=index, name=name, source=source, base=base, instructions=tuple(body))
        )
    target_index = _target_index(stages, target, dockerfile.file)
    needed: set[int] = set()
    _need(stages, target_index, needed, build_args, global_args, escape)
    return StagePlan(
        stages=tuple(stages),
        global_args=global_args,
        declared=frozenset(declared),
        needed=tuple(sorted(needed)),
        target=target_index,
    )


def platform_args() -> dict[str, str]:
    """BuildKit's automatic platform ARGs; Carte builds for (and on) this machine only."""
    from carte.image.importer import host_architecture

    architecture = host_architecture()
    variant = "v7" if architecture == "arm" else ""
    platform = "linux/" + architecture + (f"/{variant}" if variant else "")
    values: dict[str, str] = {}
    for prefix in ("BUILD", "TARGET"):
        values.update(
            {
                f"{prefix}PLATFORM": platform,
                f"{prefix}OS": "linux",
                f"{prefix}ARCH": architecture,
                f"{prefix}VARIANT": variant,
            }
        )
    return values


def _check_platform(source: Instruction, global_args: dict[str, str], escape: str) -> None:
    try:
        words = split_words(source.flags["platform"], global_args, escape)
    except WordError as error:
        raise source.error(str(error)) from None
    wanted = words[0] if words else ""
    host = platform_args()["TARGETPLATFORM"]
    parts = wanted.lower().split("/")
    if not wanted or parts[:2] != host.split("/")[:2]:
        raise source.error(
            f'--platform "{wanted}" is not this machine\'s platform ({host}); carte build runs '
            f"steps natively, without emulation: drop --platform or use {host}"
        )


def arg_definitions(
    instruction: Instruction, env: dict[str, str], escape: str
) -> list[tuple[str, str | None]]:
    """The `NAME[=default]` pairs of an ARG line, defaults expanded with `env`."""
    try:
        words = split_words(instruction.text, env, escape)
    except WordError as error:
        raise instruction.error(str(error)) from None
    definitions: list[tuple[str, str | None]] = []
    for word in words:
        name, equals, default = word.partition("=")
        if not name.replace("_", "a").isalnum():
            raise instruction.error(f'"{name}" is not a valid ARG name')
        definitions.append((name, default if equals else None))
    return definitions


def find_stage(stages: tuple[Stage, ...] | list[Stage], ref: str, before: int) -> Stage | None:
    """The stage named (or numbered) `ref` among the stages before index `before`."""
    lowered = ref.lower()
    for stage in stages[:before]:
        if stage.name and stage.name == lowered:
            return stage
    if ref.isdigit() and int(ref) < before:
        return stages[int(ref)]
    return None


def _target_index(stages: list[Stage], target: str, file: str) -> int:
    if not target:
        return len(stages) - 1
    for stage in stages:
        if stage.name == target.lower():
            return stage.index
    names = ", ".join(s.name for s in stages if s.name) or "none are named"
    raise DockerfileError(
        f'{file}: target stage "{target}" is not defined; the stages are: {names} '
        "(name one with FROM IMAGE AS NAME)"
    )


def _need(
    stages: list[Stage],
    index: int,
    needed: set[int],
    build_args: dict[str, str],
    global_args: dict[str, str],
    escape: str,
) -> None:
    if index in needed:
        return
    needed.add(index)
    stage = stages[index]
    parent = find_stage(stages, stage.base, index)
    if parent is not None:
        _need(stages, parent.index, needed, build_args, global_args, escape)
    for instruction in stage.instructions:
        sources = [instruction.flags.get("from", "")] if instruction.keyword == "COPY" else []
        if instruction.keyword == "RUN":
            sources = [_mount_from(value) for value in instruction.values("mount")]
        for source in filter(None, sources):
            try:
                expanded = split_words(source, global_args, escape)
            except WordError as error:
                raise instruction.error(str(error)) from None
            ref = expanded[0] if expanded else ""
            found = find_stage(stages, ref, index)
            if found is None and ref.lower() in {s.name for s in stages if s.name}:
                raise instruction.error(
                    f"--from={ref} names a later stage; a stage can copy only from earlier ones"
                )
            if found is not None:
                _need(stages, found.index, needed, build_args, global_args, escape)


def _mount_from(value: str) -> str:
    """The from= of a `--mount` value ("" when it has none)."""
    for item in value.split(","):
        key, _, text = item.strip().partition("=")
        if key == "from":
            return text
    return ""
