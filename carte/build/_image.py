"""Build an image from a Dockerfile and a build context directory (synchronous).

Stages are built in order, only those the target needs. Each step's cache key chains its
parent's key (`build_cache`); on a hit the stored layer is reused and nothing runs. RUN steps
run in Carte containers (`build_run`); COPY/ADD stage files into an empty directory
(`build_copy`); either way the layer is the tar of that upper directory (`diff_from_upper`),
never a walk of the whole tree, and the directory itself becomes the cached unpacked layer
(`build_layers`). Config-only instructions are in `build_metadata`. With
`source_date_epoch`, times are clamped and equal inputs give equal image digests.

On failure (a bad instruction, a failing RUN, a missing base image) a `CarteError` names the
Dockerfile line; no image is recorded and every scratch directory is removed. Layers of steps
that succeeded stay as build cache, as Docker keeps them. Cancellation (the `cancelled`
callback turning true) stops the build at its next step and kills a running RUN container.

A RUN step's `--mount`s are `build_mounts`; its network (`--network default|none|host`, the
default a namespace the caller's `attach` plugs into the NAT'd default bridge) is
`build_network`. Secrets and SSH agents (`BuildOptions.secrets`/`ssh`) are used only for the
step that mounts them: never in a layer, the cache key or the history.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from carte.api.errors import CarteError, InvalidArgument
from carte.build._cache import BuildCache, StepRecord, step_key
from carte.build._copy import (
    CopySource,
    Excludes,
    SourceError,
    Stager,
    checksum,
    match_sources,
)
from carte.build._layer_view import LayerView
from carte.build._layers import adopt_as_layer
from carte.build._metadata import (
    ArgScope,
    StageState,
    apply_metadata,
    command_of,
    is_url,
    join_path,
    mapping,
)
from carte.build._mounts import (
    MountError,
    MountRequest,
    bind_mounts,
    cache_dir,
    parse_mount,
)
from carte.build._network import NETWORK_MODES, Attach, Detach, StepNetwork
from carte.build._run import RunStep, StepFailed, run_step
from carte.build._stages import PROXY_ARGS, Stage, find_stage, plan_stages
from carte.build._words import WordError, expand_variables, expand_word, split_words
from carte.build.dockerfile import HEREDOC_NAME, Heredoc, Instruction, parse, parse_instruction
from carte.image import oci
from carte.image.digest import chain_ids
from carte.image.errors import ImageNotFound
from carte.image.importer import host_architecture
from carte.image.layers import LayerBlob, is_unpacked, layer_dir, store_layer, unpack_layer
from carte.image.store import ImageStore, StoredImage
from carte.image.upperdiff import diff_from_upper
from carte.runtime.spec import DEFAULT_PATH, Mount, User

LAYER_STEPS = frozenset({"RUN", "COPY", "ADD"})
GIT_REFUSED = (
    "ADD of a git repository is not supported by carte build (it has no git client in the "
    "builder); clone it in a RUN step or COPY a checkout from the build context"
)


def is_git(source: str) -> bool:
    """Whether an ADD source names a git repository (BuildKit's forms)."""
    lowered = source.lower()
    if lowered.startswith(("git://", "git@", "ssh://")):
        return True
    base = lowered.split("#", 1)[0].rstrip("/")
    return lowered.startswith(("http://", "https://")) and base.endswith(".git")


HEREDOC_ONLY = re.compile(r"<<-?([\"']?)" + HEREDOC_NAME + r"\1")


class BuildOptions(msgspec.Struct, frozen=True, kw_only=True):
    tags: tuple[str, ...] = ()
    dockerfile_name: str = "Dockerfile"
    build_args: dict[str, str] = {}
    target: str = ""
    no_cache: bool = False
    pull: bool = False
    labels: dict[str, str] = {}
    network: str = "default"
    source_date_epoch: int | None = None
    secrets: dict[str, bytes] = {}  # --secret id -> value; never stored anywhere
    ssh: dict[str, str] = {}  # --ssh id -> agent socket path on the daemon's host


@dataclass
class BuildEnvironment:
    """What the builder needs from its caller (the build handler)."""

    store: ImageStore
    state_dir: Path  # the runtime state directory for RUN containers
    progress: Callable[[str], None]
    resolve_user: Callable[[str, list[Path]], User]
    pull: Callable[[str], StoredImage]
    cancelled: Callable[[], bool] = lambda: False
    attach: Attach | None = None  # plugs a RUN step's namespace into the default network
    detach: Detach | None = None


def build(
    environment: BuildEnvironment,
    options: BuildOptions,
    context: Path,
    dockerfile_text: str,
) -> StoredImage:
    """Build and store the image; returns it (tagged with `options.tags`).

    Raises `DockerfileError`/`InvalidArgument` for bad input, `StepFailed` for a failing RUN,
    `ImageNotFound` for a base image that is neither local nor pullable.
    """
    return _Builder(environment, options, context).build(dockerfile_text)


class _Builder:
    def __init__(self, environment: BuildEnvironment, options: BuildOptions, context: Path):
        self.env = environment
        self.store = environment.store
        self.options = options
        self.context = context
        self.cache = BuildCache(environment.store)
        self.results: dict[int, StageState] = {}
        self.step_number = 0
        self.scratch_root = self.store.root / "build-scratch"
        self.scratch_root.mkdir(exist_ok=True)
        self._downloads: list[Path] = []

    # -- driving -------------------------------------------------------------------------

    def build(self, text: str) -> StoredImage:
        dockerfile = parse(text, self.options.dockerfile_name)
        self.escape = dockerfile.escape
        plan = plan_stages(dockerfile, dict(self.options.build_args), self.options.target)
        self.plan = plan
        self.scope = ArgScope(
            build_args=dict(self.options.build_args),
            global_args=plan.global_args,
            escape=self.escape,
        )
        try:
            with self.store.writing():
                for index in plan.needed:
                    self.results[index] = self._build_stage(plan.stages[index])
                image = self._commit(self.results[plan.target])
        finally:
            for directory in self._downloads:
                shutil.rmtree(directory, ignore_errors=True)
        unused = sorted(
            name
            for name in self.options.build_args
            if name not in plan.declared and name not in PROXY_ARGS
        )
        if unused:
            self.env.progress(f"[Warning] One or more build-args {unused} were not consumed")
        return image

    def _header(self, stage: Stage, position: int, instruction: Instruction) -> str:
        self.step_number += 1
        label = f"{stage.name} " if stage.name else ""
        count = len(stage.instructions) + 1
        self.env.progress(f"#{self.step_number} [{label}{position}/{count}] {instruction.original}")
        return f"#{self.step_number}"

    def _build_stage(self, stage: Stage) -> StageState:
        state = self._from(stage)
        shown = f"FROM {stage.base}" + (f" AS {stage.name}" if stage.name else "")
        self._header(stage, 1, msgspec.structs.replace(stage.source, original=shown))
        instructions = list(stage.instructions)
        triggers = state.config.pop("OnBuild", None)
        if isinstance(triggers, (list, tuple)):
            instructions = [
                parse_instruction(str(t), line=stage.source.line, file=stage.source.file)
                for t in triggers
            ] + instructions
        for position, instruction in enumerate(instructions, start=2):
            if self.env.cancelled():
                raise InvalidArgument("the build was cancelled")
            self._step(stage, position, instruction, state)
        return state

    def _from(self, stage: Stage) -> StageState:
        state = self._base_state(stage)
        env = state.env_list()
        if not any(item.startswith("PATH=") for item in env):
            # As BuildKit does: a base without PATH gets the default, so ENV PATH=$PATH:/x works.
            state.config["Env"] = [DEFAULT_PATH, *env]
        return state

    def _base_state(self, stage: Stage) -> StageState:
        if stage.base.lower() == "scratch":
            return StageState(key=step_key("", "FROM scratch"), layers=[], config={}, history=[])
        parent = find_stage(self.plan.stages, stage.base, stage.index)
        if parent is not None:
            built = self.results[parent.index]
            return StageState(
                key=built.key,
                layers=list(built.layers),
                config=dict(built.config),
                history=list(built.history),
            )
        image = self._base_image(stage)
        config = image.config.config or oci.ContainerConfig()
        return StageState(
            key=step_key("", f"FROM {image.id}"),
            layers=[
                LayerBlob(descriptor=descriptor, diff_id=diff_id)
                for descriptor, diff_id in zip(image.manifest.layers, image.diff_ids, strict=True)
            ],
            config=msgspec.to_builtins(config),
            history=list(image.config.history or ()),
        )

    def _base_image(self, stage: Stage) -> StoredImage:
        if not self.options.pull:
            try:
                return self.store.get(stage.base)
            except ImageNotFound:
                pass
        try:
            return self.env.pull(stage.base)
        except CarteError as error:
            raise stage.source.error(
                f'base image "{stage.base}" is not in the local store and could not be pulled '
                f"({error.message})"
            ) from None

    # -- one step ------------------------------------------------------------------------

    def _step(
        self, stage: Stage, position: int, instruction: Instruction, state: StageState
    ) -> None:
        keyword = instruction.keyword
        try:
            if keyword in LAYER_STEPS:
                number = self._header(stage, position, instruction)
                self._layer_step(number, instruction, state)
            else:
                description = apply_metadata(instruction, state, self.scope)
                self._record_metadata(instruction, state, description)
        except (WordError, SourceError) as error:
            raise instruction.error(str(error)) from None

    def _record_metadata(self, instruction: Instruction, state: StageState, described: str) -> None:
        key = step_key(state.key, described)
        record = None if self.options.no_cache else self.cache.get(key)
        if record is None:
            record = StepRecord(created=self._now())
            self.cache.put(key, record)
        state.key = key
        state.history.append(
            oci.History(
                created=record.created,
                created_by=f"{instruction.keyword} {instruction.text}".strip(),
                comment="carte build",
                empty_layer=True,
            )
        )

    def _layer_step(self, number: str, instruction: Instruction, state: StageState) -> None:
        started = time.monotonic()
        if instruction.keyword == "RUN":
            described, make_layer = self._run(number, instruction, state)
        else:
            described, make_layer = self._copy(instruction, state)
        key = step_key(state.key, described)
        record = None if self.options.no_cache else self.cache.get(key)
        if record is not None:
            self.env.progress(f"{number} CACHED")
        else:
            layer = make_layer()
            record = StepRecord(layer=layer, created=self._now())
            self.cache.put(key, record)
            self.env.progress(f"{number} DONE {time.monotonic() - started:.1f}s")
        assert record.layer is not None
        state.key = key
        state.layers.append(record.layer)
        state.history.append(
            oci.History(
                created=record.created,
                created_by=f"{instruction.keyword} {instruction.text}".strip(),
                comment="carte build",
            )
        )

    # -- RUN -----------------------------------------------------------------------------

    def _run(
        self, number: str, instruction: Instruction, state: StageState
    ) -> tuple[str, Callable[[], LayerBlob]]:
        for flag in instruction.flags:
            if flag == "security" and instruction.flags[flag] == "sandbox":
                continue
            if flag not in ("network", "mount"):
                raise instruction.error(
                    f"--{flag}={instruction.flags[flag]} is not supported by carte build; remove it"
                )
        argv = self._run_command(instruction, state)
        env = state.env_map()
        in_use = {k: v for k, v in sorted(state.args.items()) if k not in env}
        proxies = {
            k: v for k, v in self.options.build_args.items() if k in PROXY_ARGS and k not in env
        }
        run_env = [f"{k}={v}" for k, v in {**in_use, **proxies, **env}.items()]
        if not any(item.startswith("PATH=") for item in run_env):
            run_env.insert(0, DEFAULT_PATH)
        network = instruction.flags.get("network", self.options.network)
        if network not in NETWORK_MODES:
            raise instruction.error(
                f'--network "{network}" is unknown; use {", ".join(NETWORK_MODES)}'
            )
        workdir = str(state.config.get("WorkingDir") or "/")
        words_env = state.words_env()
        try:
            requests = [
                parse_mount(expand_word(text, words_env, self.escape), workdir)
                for text in instruction.values("mount")
            ]
        except MountError as error:
            raise instruction.error(str(error)) from None
        targets = [r.target for r in requests if r.target]
        if len(set(targets)) != len(targets):
            raise instruction.error("two --mount flags have the same target; give each its own")
        secrets: list[MountRequest] = []
        for request in requests:
            if request.type != "secret":
                continue
            if request.id in self.options.secrets:
                secrets.append(request)
            elif request.required:
                raise instruction.error(
                    f'secret "{request.id}" is required but was not given; pass it with '
                    f"carte build --secret id={request.id},src=FILE"
                )
        agents: list[MountRequest] = []
        for request in requests:
            if request.type != "ssh":
                continue
            if request.id not in self.options.ssh:
                if request.required:
                    raise instruction.error(
                        f'SSH agent "{request.id}" is required but was not given; pass it with '
                        f"carte build --ssh {request.id}[=SOCKET]"
                    )
                continue
            target = request.target or f"/run/buildkit/ssh_agent.{len(agents)}"
            agents.append(msgspec.structs.replace(request, target=target))
        ssh_env = [f"SSH_AUTH_SOCK={agents[0].target}"] if agents else []
        binds = {
            index: self._bind_source(instruction, request)
            for index, request in enumerate(requests)
            if request.type == "bind"
        }
        described = "RUN " + json.dumps(
            {
                "argv": argv,
                "args": in_use,
                "mounts": [r.described() for r in requests],
                "binds": {str(i): key for i, (_, key, _) in binds.items()},
            }
        )
        secret_env = [
            f"{r.env}={self.options.secrets[r.id].decode('utf-8', 'replace')}"
            for r in secrets
            if r.env
        ]

        def make_layer() -> LayerBlob:
            lowerdirs = self._lowerdirs(state)
            user = self._user(instruction, str(state.config.get("User") or ""), lowerdirs)
            shown = f"{instruction.file}:{instruction.line}: RUN {instruction.text}"
            with self._scratch() as scratch:
                mounts_dir = scratch / "mounts"
                mounts_dir.mkdir()
                mounts = []
                locks = []
                try:
                    for index, request in enumerate(requests):
                        if request.type == "bind":
                            view, _, what = binds[index]
                            mounts += bind_mounts(request, view, mounts_dir, what)
                        elif request.type == "cache":
                            mount, lock = self._cache_mount(request)
                            mounts.append(mount)
                            if lock is not None:
                                locks.append(lock)
                        elif request.type == "tmpfs":
                            options = ["nosuid", "nodev"]
                            if request.size:
                                options.append(f"size={request.size}")
                            mounts.append(
                                Mount(
                                    destination=request.target,
                                    type="tmpfs",
                                    source="tmpfs",
                                    options=options,
                                )
                            )
                        elif request in secrets and request.target:
                            mounts.append(self._secret_mount(request, mounts_dir))
                    for agent in agents:
                        mounts.append(self._agent_mount(instruction, agent))
                    step_id = "build-" + uuid.uuid4().hex[:16]
                    with StepNetwork(
                        network, step_id, self.env.attach, self.env.detach
                    ) as step_network:
                        step = RunStep(
                            argv=tuple(argv),
                            env=tuple([*run_env, *secret_env, *ssh_env]),
                            cwd=workdir,
                            user=user,
                            network=network,
                            shown=shown,
                            netns_path=step_network.netns_path,
                            resolv_conf=step_network.resolv_conf,
                            hosts=step_network.hosts,
                            mounts=tuple(mounts),
                        )
                        upper = run_step(
                            step,
                            lowerdirs,
                            scratch,
                            self.env.state_dir,
                            lambda line: self.env.progress(f"{number} {line}"),
                            self.env.cancelled,
                        )
                except MountError as error:
                    raise instruction.error(str(error)) from None
                except StepFailed:
                    raise
                except CarteError as error:
                    raise instruction.error(
                        f"cannot give the step the {network} network ({error.message}); "
                        "try --network host or none"
                    ) from None
                except OSError as error:
                    raise instruction.error(
                        f"cannot give the step its {network} network or mounts ({error}); "
                        "try --network host or none"
                    ) from None
                finally:
                    for lock in locks:
                        os.close(lock)
                return self._store_upper(upper, state)

        return described, make_layer

    def _bind_source(
        self, instruction: Instruction, request: MountRequest
    ) -> tuple[LayerView, str, str]:
        """Where a bind mount reads from, the cache key of its content, and its name."""
        if request.from_:
            view, key, what, _ = self._copy_source(instruction, request.from_)
        else:
            view, what = LayerView([self.context]), "build context"
            key = "context"
        path = posixpath.normpath("/" + request.source)
        if view.lookup(path) is None:
            raise instruction.error(
                f'--mount source "{request.source or "."}" was not found in the {what}'
            )
        content = checksum(view, [CopySource(path=path, host="")], with_owner=False)
        return view, f"{key}:{content}", what

    def _cache_mount(self, request: MountRequest) -> tuple[Mount, int | None]:
        directory = cache_dir(self.store.root, request.id)
        if not directory.is_dir():
            directory.mkdir(parents=True, mode=0o755)
            os.chown(directory, request.uid, request.gid)
            directory.chmod(request.mode if request.mode is not None else 0o755)
        lock = None
        if request.sharing == "locked":
            lock = os.open(directory.parent / (directory.name + ".lock"), os.O_CREAT | os.O_RDWR)
            fcntl.flock(lock, fcntl.LOCK_EX)
        options = ["rbind", "ro"] if request.readonly else ["rbind"]
        mount = Mount(
            destination=request.target, type="bind", source=str(directory), options=options
        )
        return mount, lock

    def _agent_mount(self, instruction: Instruction, request: MountRequest) -> Mount:
        socket_path = self.options.ssh[request.id]
        try:
            is_socket = stat.S_ISSOCK(os.stat(socket_path).st_mode)
        except OSError:
            is_socket = False
        if not is_socket:
            raise instruction.error(
                f'SSH agent "{request.id}": {socket_path} is not a socket on the daemon\'s '
                "host; start ssh-agent or give --ssh ID=SOCKET"
            )
        return Mount(
            destination=request.target,
            type="bind",
            source=socket_path,
            options=["rbind", "nosuid", "nodev", "noexec"],
        )

    def _secret_mount(self, request: MountRequest, directory: Path) -> Mount:
        secret = directory / f"secret-{len(list(directory.iterdir()))}"
        fd = os.open(secret, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with open(fd, "wb") as out:
            out.write(self.options.secrets[request.id])
        os.chown(secret, request.uid, request.gid)
        secret.chmod(request.mode if request.mode is not None else 0o400)
        return Mount(
            destination=request.target,
            type="bind",
            source=str(secret),
            options=["rbind", "ro", "nosuid", "nodev", "noexec"],
        )

    # -- COPY / ADD ----------------------------------------------------------------------

    def _copy(
        self, instruction: Instruction, state: StageState
    ) -> tuple[str, Callable[[], LayerBlob]]:
        is_add = instruction.keyword == "ADD"
        allowed = {"from", "chown", "chmod", "link", "exclude"}
        allowed |= {"checksum"} if is_add else {"parents"}
        unsupported = set(instruction.flags) - allowed
        if unsupported:
            flag = sorted(unsupported)[0]
            if flag == "keep-git-dir":
                raise instruction.error(GIT_REFUSED)
            raise instruction.error(f"--{flag} is not supported by carte build; remove it")
        excludes = Excludes(
            [expand_word(v, state.words_env(), self.escape) for v in instruction.values("exclude")]
        )
        parents = instruction.flags.get("parents", "false").lower() in ("true", "1", "")
        words_env = state.words_env()
        if instruction.exec_form is not None:
            words = list(instruction.exec_form)
        else:
            words = split_words(instruction.text, words_env, self.escape)
        if len(words) < 2:
            raise instruction.error("needs at least one source and a destination")
        *patterns, dest_word = words
        workdir = str(state.config.get("WorkingDir") or "/")
        dest_is_dir = dest_word.endswith("/") or dest_word in (".", "..") or len(patterns) > 1
        dest = join_path(workdir, dest_word)
        if is_add and any(is_git(p) for p in patterns):
            raise instruction.error(GIT_REFUSED)
        if parents:
            dest_is_dir = True
        source_view, source_key, what, keep_owner = self._copy_source(
            instruction, instruction.flags.get("from")
        )
        heredocs = {f"<<{h.name}": h for h in instruction.heredocs}
        heredocs.update({f"<<-{h.name}": h for h in instruction.heredocs})
        urls = [p for p in patterns if is_add and is_url(p)]
        local = [p for p in patterns if p not in urls and p not in heredocs]
        sources: list[CopySource] = []
        kept_paths: list[str] = []  # --parents: each source's path below dest
        for pattern in local:
            for source in match_sources(source_view, [pattern], what):
                if excludes.excluded(source.path):
                    continue
                sources.append(source)
                pivot = posixpath.normpath("/" + pattern.split("/./", 1)[0])
                if "/./" not in pattern:
                    pivot = "/"
                kept_paths.append(posixpath.relpath(source.path, pivot))
        if local and not sources:
            raise instruction.error(
                f"every source matches an --exclude pattern; nothing to {instruction.keyword}"
            )
        inline = [heredocs[p] for p in patterns if p in heredocs]
        expected = instruction.flags.get("checksum")
        if expected is not None:
            if not urls or len(patterns) != 1:
                raise instruction.error("--checksum needs exactly one http(s) URL source")
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", expected):
                raise instruction.error(f'--checksum "{expected}" is not sha256:<64 hex digits>')
        downloads = self._download_all(urls) + self._heredoc_files(inline, words_env)
        if expected is not None:
            actual = "sha256:" + hashlib.sha256(downloads[0].read_bytes()).hexdigest()
            if actual != expected:
                raise instruction.error(
                    f"{urls[0]} has checksum {actual}, not the {expected} --checksum expects; "
                    "fix the URL or the checksum"
                )
        generated = [*urls, *(f"<<{h.name}" for h in inline)]
        chown = instruction.flags.get("chown")
        chmod_text = instruction.flags.get("chmod")
        mode: int | None = None
        if chmod_text is not None:
            try:
                mode = int(chmod_text, 8)
            except ValueError:
                raise instruction.error(
                    f'--chmod "{chmod_text}" is not an octal mode; use e.g. --chmod=0644'
                ) from None
        content = checksum(source_view, sources, with_owner=keep_owner, excludes=excludes)
        download_sums = [
            checksum(
                LayerView([d.parent]),
                [CopySource(path="/" + d.name, host=str(d))],
                with_owner=False,
            )
            for d in downloads
        ]
        described = f"{instruction.keyword} " + json.dumps(
            {
                "from": source_key,
                "sources": content,
                "generated": list(zip(generated, download_sums, strict=True)),
                "dest": dest,
                "dir": dest_is_dir,
                "chown": chown,
                "chmod": chmod_text,
                "exclude": excludes.patterns,
                "parents": kept_paths if parents else None,
            }
        )

        def make_layer() -> LayerBlob:
            lowerdirs = self._lowerdirs(state)
            lower = LayerView(lowerdirs)
            owner: tuple[int, int] | None = None
            if chown:
                user = self._user(instruction, chown, lowerdirs)
                owner = (user.uid, user.gid)
            directory = dest_is_dir or lower.is_dir(dest)
            with self._scratch() as scratch:
                staging = scratch / "upper"
                staging.mkdir()
                stager = Stager(staging, lower, owner=owner, mode=mode, excludes=excludes)
                stager.ensure_dir("/")
                for source, kept in zip(sources, kept_paths, strict=True):
                    if parents:
                        target = join_path(dest, kept) if kept != "." else dest
                        stager.copy(source_view, source.path, target, keep_owner=keep_owner)
                    elif source_view.is_dir(source.path):
                        stager.ensure_dir(dest)
                        for name in source_view.children(source.path):
                            stager.copy(
                                source_view,
                                source.path.rstrip("/") + "/" + name,
                                dest.rstrip("/") + "/" + name,
                                keep_owner=keep_owner,
                                base=source.path,
                            )
                    elif is_add and stager.extract_archive(source.host, dest):
                        continue
                    else:
                        target = (
                            dest.rstrip("/") + "/" + (source.name or source.path.rsplit("/", 1)[-1])
                            if directory
                            else dest
                        )
                        stager.copy(source_view, source.path, target, keep_owner=keep_owner)
                for download in downloads:
                    view = LayerView([download.parent])
                    target = dest.rstrip("/") + "/" + download.name if directory else dest
                    stager.copy(view, "/" + download.name, target, keep_owner=False)
                return self._store_upper(staging, state)

        return described, make_layer

    def _copy_source(
        self, instruction: Instruction, source: str | None
    ) -> tuple[LayerView, str, str, bool]:
        """Where COPY (or a bind mount) reads from: the context, an earlier stage or an image."""
        if source is None:
            return LayerView([self.context]), "context", "build context", False
        ref = expand_word(source, self.plan.global_args, self.escape)
        stage = self._current_stage_index(instruction)
        found = find_stage(self.plan.stages, ref, stage)
        if found is not None:
            built = self.results[found.index]
            return LayerView(self._lowerdirs(built)), built.key, f'stage "{ref}"', True
        try:
            image = self.store.get(ref)
        except ImageNotFound:
            try:
                image = self.env.pull(ref)
            except CarteError as error:
                raise instruction.error(
                    f"--from={ref} is neither an earlier stage nor an image that could be "
                    f"found or pulled ({error.message})"
                ) from None
        layers = [
            LayerBlob(descriptor=d, diff_id=i)
            for d, i in zip(image.manifest.layers, image.diff_ids, strict=True)
        ]
        return LayerView(self._unpacked(layers)), image.id, f'image "{ref}"', True

    def _current_stage_index(self, instruction: Instruction) -> int:
        for stage in self.plan.stages:
            if instruction in stage.instructions:
                return stage.index
        return len(self.plan.stages)

    def _run_command(self, instruction: Instruction, state: StageState) -> list[str]:
        """RUN's argv; heredocs go back under the command line for the shell to read, and a
        line that is only `<<NAME` runs the body itself as the script (BuildKit's rules)."""
        argv = command_of(instruction, state)
        if not instruction.heredocs:
            return argv
        shell = argv[:-1]
        if HEREDOC_ONLY.fullmatch(instruction.text.strip()):
            return [*shell, instruction.heredocs[0].body]
        script = (
            instruction.text + "\n" + "".join(h.body + h.name + "\n" for h in instruction.heredocs)
        )
        return [*shell, script]

    def _source_directory(self, prefix: str) -> Path:
        """A new scratch directory for files a COPY/ADD takes from outside the context (heredoc
        bodies, downloads); removed when the build ends."""
        directory = Path(tempfile.mkdtemp(dir=self.scratch_root, prefix=prefix))
        self._downloads.append(directory)
        return directory

    def _heredoc_files(self, heredocs: list[Heredoc], words_env: dict[str, str]) -> list[Path]:
        if not heredocs:
            return []
        directory = self._source_directory("heredoc-")
        paths = []
        for heredoc in heredocs:
            body = heredoc.body
            if heredoc.expand:
                body = expand_variables(body, words_env, self.escape)
            target = directory / heredoc.name
            target.write_text(body)
            target.chmod(0o644)
            paths.append(target)
        return paths

    def _download_all(self, urls: list[str]) -> list[Path]:
        if not urls:
            return []
        directory = self._source_directory("download-")
        paths = []
        for url in urls:
            name = Path(urllib.parse.urlparse(url).path).name or "index.html"
            target = directory / name
            try:
                with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
                    shutil.copyfileobj(response, out)
            except OSError as error:
                raise SourceError(f'cannot download "{url}": {error}') from None
            target.chmod(0o600)
            paths.append(target)
        return paths

    def _user(self, instruction: Instruction, name: str, lowerdirs: list[Path]) -> User:
        try:
            return self.env.resolve_user(name, lowerdirs)
        except CarteError:
            raise instruction.error(
                f'user "{name}" is not in the image\'s /etc/passwd or /etc/group; use a '
                "numeric uid[:gid] or create the user in an earlier RUN step"
            ) from None

    # -- layers and commit ---------------------------------------------------------------

    def _scratch(self) -> _Scratch:
        return _Scratch(self.scratch_root)

    def _store_upper(self, upper: Path, state: StageState) -> LayerBlob:
        epoch = self.options.source_date_epoch
        layer = store_layer(
            self.store, lambda out: diff_from_upper(upper, out, source_date_epoch=epoch)
        )
        chain = chain_ids([*(below.diff_id for below in state.layers), layer.diff_id])[-1]
        adopt_as_layer(self.store, upper, chain, layer.diff_id, epoch)
        return layer

    def _lowerdirs(self, state: StageState) -> list[Path]:
        return self._unpacked(state.layers)

    def _unpacked(self, layers: list[LayerBlob]) -> list[Path]:
        chains = chain_ids([layer.diff_id for layer in layers]) if layers else []
        for layer, chain in zip(layers, chains, strict=True):
            if not is_unpacked(self.store, chain):
                unpack_layer(self.store, layer.descriptor, layer.diff_id, chain, trusted=True)
        return [layer_dir(self.store, chain) for chain in reversed(chains)]

    def _now(self) -> str:
        epoch = self.options.source_date_epoch
        moment = (
            datetime.datetime.fromtimestamp(epoch, datetime.UTC)
            if epoch is not None
            else datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        )
        return moment.isoformat().replace("+00:00", "Z")

    def _commit(self, state: StageState) -> StoredImage:
        config = dict(state.config)
        author = config.pop("__author", None)
        labels = dict(mapping(config.get("Labels")))
        labels.update(self.options.labels)
        if labels:
            config["Labels"] = labels
        container = msgspec.convert(config, oci.ContainerConfig)
        created = state.history[-1].created if state.history else self._now()
        image_config = oci.ImageConfig(
            created=created,
            author=str(author) if author else None,
            architecture=host_architecture(),
            os="linux",
            config=container,
            rootfs=oci.RootFS(diff_ids=tuple(layer.diff_id for layer in state.layers)),
            history=tuple(state.history),
        )
        config_descriptor = self.store.put_blob(oci.encode(image_config), oci.OCI_CONFIG)
        manifest = oci.Manifest(
            schema_version=2,
            media_type=oci.OCI_MANIFEST,
            config=config_descriptor,
            layers=tuple(layer.descriptor for layer in state.layers),
            annotations={oci.CREATED: created} if created else None,
        )
        manifest_descriptor = self.store.put_blob(oci.encode(manifest), oci.OCI_MANIFEST)
        return self.store.add_image(manifest_descriptor, self.options.tags)


class _Scratch:
    """A temporary directory under ROOT/build-scratch, removed on exit whatever happened."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path: Path | None = None

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(dir=self.root, prefix="step-"))
        return self.path

    def __exit__(self, *exc_info: object) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
