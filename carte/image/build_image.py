"""Build an image from a Dockerfile and a build context directory (synchronous).

Stages are built in order, only those the target needs. Each step's cache key chains its
parent's key (`build_cache`); on a hit the stored layer is reused and nothing runs. RUN steps
run in Carte containers (`build_run`); COPY/ADD stage files into an empty directory
(`build_copy`); either way the layer is the tar of that upper directory (`diff_from_upper`),
never a walk of the whole tree. With `source_date_epoch`, times are clamped and equal inputs
give equal image digests.

On failure (a bad instruction, a failing RUN, a missing base image) a `CarteError` names the
Dockerfile line; no image is recorded and every scratch directory is removed. Layers of steps
that succeeded stay as build cache, as Docker keeps them.
"""

from __future__ import annotations

import datetime
import json
import posixpath
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from carte.api.errors import CarteError, InvalidArgument
from carte.image import oci
from carte.image.build_cache import BuildCache, StepRecord, step_key
from carte.image.build_copy import CopySource, SourceError, Stager, checksum, match_sources
from carte.image.build_layer_view import LayerView
from carte.image.build_run import RunStep, run_step
from carte.image.build_stages import PROXY_ARGS, Stage, arg_definitions, find_stage, plan_stages
from carte.image.build_words import WordError, expand_word, key_values, split_words
from carte.image.digest import chain_ids
from carte.image.dockerfile import DockerfileError, Instruction, parse, parse_instruction
from carte.image.errors import ImageNotFound
from carte.image.importer import host_architecture
from carte.image.layers import LayerBlob, is_unpacked, layer_dir, store_layer, unpack_layer
from carte.image.store import ImageStore, StoredImage
from carte.image.upperdiff import diff_from_upper
from carte.runtime.spec import DEFAULT_PATH, User

DEFAULT_SHELL = ("/bin/sh", "-c")
LAYER_STEPS = frozenset({"RUN", "COPY", "ADD"})


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


@dataclass
class BuildEnvironment:
    """What the builder needs from its caller (the build handler)."""

    store: ImageStore
    state_dir: Path  # the runtime state directory for RUN containers
    progress: Callable[[str], None]
    resolve_user: Callable[[str, list[Path]], User]
    pull: Callable[[str], StoredImage]
    cancelled: Callable[[], bool] = lambda: False


@dataclass
class _State:
    """A stage being built: its layers, container config, history and cache key."""

    key: str
    layers: list[LayerBlob]
    config: dict[str, object]
    history: list[oci.History]
    args: dict[str, str] = field(default_factory=dict)
    cmd_set: bool = False

    def env_map(self) -> dict[str, str]:
        pairs = [item.partition("=") for item in self.env_list()]
        return {key: value for key, _, value in pairs}

    def env_list(self) -> list[str]:
        value = self.config.get("Env")
        return list(value) if isinstance(value, (list, tuple)) else []


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
        self.results: dict[int, _State] = {}
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

    def _build_stage(self, stage: Stage) -> _State:
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

    def _from(self, stage: Stage) -> _State:
        if stage.base.lower() == "scratch":
            return _State(key=step_key("", "FROM scratch"), layers=[], config={}, history=[])
        parent = find_stage(self.plan.stages, stage.base, stage.index)
        if parent is not None:
            built = self.results[parent.index]
            return _State(
                key=built.key,
                layers=list(built.layers),
                config=dict(built.config),
                history=list(built.history),
            )
        image = self._base_image(stage)
        config = image.config.config or oci.ContainerConfig()
        return _State(
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

    def _step(self, stage: Stage, position: int, instruction: Instruction, state: _State) -> None:
        keyword = instruction.keyword
        try:
            if keyword in LAYER_STEPS:
                number = self._header(stage, position, instruction)
                self._layer_step(number, instruction, state)
            else:
                description = self._apply_metadata(instruction, state)
                self._record_metadata(instruction, state, description)
        except (WordError, SourceError) as error:
            raise instruction.error(str(error)) from None

    def _words_env(self, state: _State) -> dict[str, str]:
        return {**state.args, **state.env_map()}

    def _apply_metadata(self, instruction: Instruction, state: _State) -> str:
        """Apply ENV, ARG, LABEL, ... to the stage; return the text the cache key uses."""
        keyword = instruction.keyword
        words_env = self._words_env(state)
        config = state.config
        if keyword == "ENV":
            env = state.env_map()
            pairs = key_values(instruction.text, words_env, self.escape)
            for key, value in pairs:
                env[key] = value
            config["Env"] = [f"{k}={v}" for k, v in env.items()]
            return "ENV " + json.dumps(pairs)
        if keyword == "ARG":
            definitions = arg_definitions(instruction, words_env, self.escape)
            for name, default in definitions:
                if name in self.options.build_args:
                    state.args[name] = self.options.build_args[name]
                elif default is not None:
                    state.args[name] = default
                elif name in self.plan.global_args:
                    state.args[name] = self.plan.global_args[name]
            return "ARG " + json.dumps({n: state.args.get(n) for n, _ in definitions})
        if keyword == "LABEL":
            labels = dict(_mapping(config.get("Labels")))
            labels.update(key_values(instruction.text, words_env, self.escape, legacy=True))
            config["Labels"] = labels
            return "LABEL " + json.dumps(labels, sort_keys=True)
        if keyword == "WORKDIR":
            path = expand_word(instruction.text, words_env, self.escape)
            current = str(config.get("WorkingDir") or "/")
            config["WorkingDir"] = _join(current, path)
            return f"WORKDIR {config['WorkingDir']}"
        if keyword == "USER":
            config["User"] = expand_word(instruction.text, words_env, self.escape)
            return f"USER {config['User']}"
        if keyword in ("CMD", "ENTRYPOINT"):
            command = self._command(instruction, state)
            if keyword == "CMD":
                config["Cmd"], state.cmd_set = command, True
            else:
                config["Entrypoint"] = command
                if not state.cmd_set:
                    config.pop("Cmd", None)
            return f"{keyword} {json.dumps(command)}"
        if keyword == "SHELL":
            if instruction.exec_form is None or not instruction.exec_form:
                raise instruction.error('SHELL needs the JSON form, e.g. SHELL ["/bin/sh", "-c"]')
            config["Shell"] = list(instruction.exec_form)
            return f"SHELL {json.dumps(config['Shell'])}"
        if keyword == "EXPOSE":
            ports = dict(_mapping(config.get("ExposedPorts")))
            for port in split_words(instruction.text, words_env, self.escape):
                number, _, protocol = port.partition("/")
                if not number.replace("-", "").isdigit():
                    raise instruction.error(f'"{port}" is not a port; use e.g. 8080 or 53/udp')
                ports[f"{number}/{(protocol or 'tcp').lower()}"] = {}
            config["ExposedPorts"] = ports
            return "EXPOSE " + " ".join(sorted(ports))
        if keyword == "VOLUME":
            volumes = dict(_mapping(config.get("Volumes")))
            paths = instruction.exec_form or tuple(
                split_words(instruction.text, words_env, self.escape)
            )
            for path in paths:
                volumes[path] = {}
            config["Volumes"] = volumes
            return "VOLUME " + " ".join(sorted(volumes))
        if keyword == "STOPSIGNAL":
            config["StopSignal"] = expand_word(instruction.text, words_env, self.escape)
            return f"STOPSIGNAL {config['StopSignal']}"
        if keyword == "HEALTHCHECK":
            config["Healthcheck"] = self._healthcheck(instruction, state)
            return "HEALTHCHECK " + json.dumps(config["Healthcheck"], sort_keys=True)
        if keyword == "ONBUILD":
            trigger = parse_instruction(
                instruction.text, line=instruction.line, file=instruction.file
            )
            if trigger.keyword in ("ONBUILD", "FROM", "MAINTAINER"):
                raise instruction.error(f"{trigger.keyword} is not allowed as an ONBUILD trigger")
            config["OnBuild"] = [*_sequence(config.get("OnBuild")), instruction.text]
            return f"ONBUILD {instruction.text}"
        if keyword == "MAINTAINER":
            state.config["__author"] = instruction.text
            return f"MAINTAINER {instruction.text}"
        raise instruction.error("is not supported here")

    def _command(self, instruction: Instruction, state: _State) -> list[str]:
        if instruction.exec_form is not None:
            return list(instruction.exec_form)
        shell = list(_sequence(state.config.get("Shell"))) or list(DEFAULT_SHELL)
        return [*shell, instruction.text]

    def _healthcheck(self, instruction: Instruction, state: _State) -> dict[str, object]:
        text = instruction.text
        if text.upper() == "NONE":
            return {"Test": ["NONE"]}
        keyword, _, rest = text.partition(" ")
        if keyword.upper() != "CMD":
            raise instruction.error('expected "HEALTHCHECK [OPTIONS] CMD command" or NONE')
        trigger = parse_instruction("CMD " + rest, line=instruction.line, file=instruction.file)
        if trigger.exec_form is not None:
            test = ["CMD", *trigger.exec_form]
        else:
            test = ["CMD-SHELL", trigger.text]
        check: dict[str, object] = {"Test": test}
        names = {
            "interval": "Interval",
            "timeout": "Timeout",
            "start-period": "StartPeriod",
            "start-interval": "StartInterval",
        }
        for flag, value in instruction.flags.items():
            if flag == "retries":
                if not value.isdigit():
                    raise instruction.error(f'--retries "{value}" is not a number')
                check["Retries"] = int(value)
            elif flag in names and flag != "start-interval":
                check[names[flag]] = _duration_ns(value, instruction)
        return check

    def _record_metadata(self, instruction: Instruction, state: _State, described: str) -> None:
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

    def _layer_step(self, number: str, instruction: Instruction, state: _State) -> None:
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
        self, number: str, instruction: Instruction, state: _State
    ) -> tuple[str, Callable[[], LayerBlob]]:
        for flag in instruction.flags:
            if flag != "network":
                raise instruction.error(f"--{flag} is not supported by carte build")
        argv = self._command(instruction, state)
        env = state.env_map()
        in_use = {k: v for k, v in sorted(state.args.items()) if k not in env}
        proxies = {
            k: v for k, v in self.options.build_args.items() if k in PROXY_ARGS and k not in env
        }
        run_env = [f"{k}={v}" for k, v in {**in_use, **proxies, **env}.items()]
        if not any(item.startswith("PATH=") for item in run_env):
            run_env.insert(0, DEFAULT_PATH)
        network = instruction.flags.get("network", self.options.network)
        if network not in ("none", "host", "default"):
            raise instruction.error(f'--network "{network}" is unknown; use none, host or default')
        described = "RUN " + json.dumps({"argv": argv, "args": in_use})

        def make_layer() -> LayerBlob:
            lowerdirs = self._lowerdirs(state)
            user = self.env.resolve_user(str(state.config.get("User") or ""), lowerdirs)
            step = RunStep(
                argv=tuple(argv),
                env=tuple(run_env),
                cwd=str(state.config.get("WorkingDir") or "/"),
                user=user,
                network=network,
                shown=f"{instruction.file}:{instruction.line}: RUN {instruction.text}",
            )
            with self._scratch() as scratch:
                upper = run_step(
                    step,
                    lowerdirs,
                    scratch,
                    self.env.state_dir,
                    lambda line: self.env.progress(f"{number} {line}"),
                    self.env.cancelled,
                )
                return self._store_upper(upper, state)

        return described, make_layer

    # -- COPY / ADD ----------------------------------------------------------------------

    def _copy(self, instruction: Instruction, state: _State) -> tuple[str, Callable[[], LayerBlob]]:
        words_env = self._words_env(state)
        if instruction.exec_form is not None:
            words = list(instruction.exec_form)
        else:
            words = split_words(instruction.text, words_env, self.escape)
        if len(words) < 2:
            raise instruction.error("needs at least one source and a destination")
        *patterns, dest_word = words
        workdir = str(state.config.get("WorkingDir") or "/")
        dest_is_dir = dest_word.endswith("/") or dest_word in (".", "..") or len(patterns) > 1
        dest = _join(workdir, dest_word)
        is_add = instruction.keyword == "ADD"
        source_view, source_key, what, keep_owner = self._copy_source(instruction, state)
        urls = [p for p in patterns if is_add and _is_url(p)]
        local = [p for p in patterns if p not in urls]
        sources: list[CopySource] = match_sources(source_view, local, what) if local else []
        downloads = self._download_all(urls)
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
        content = checksum(source_view, sources, with_owner=keep_owner)
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
                "urls": list(zip(urls, download_sums, strict=True)),
                "dest": dest,
                "dir": dest_is_dir,
                "chown": chown,
                "chmod": chmod_text,
            }
        )

        def make_layer() -> LayerBlob:
            lowerdirs = self._lowerdirs(state)
            lower = LayerView(lowerdirs)
            owner: tuple[int, int] | None = None
            if chown:
                user = self.env.resolve_user(chown, lowerdirs)
                owner = (user.uid, user.gid)
            directory = dest_is_dir or lower.is_dir(dest)
            with self._scratch() as scratch:
                staging = scratch / "upper"
                staging.mkdir()
                stager = Stager(staging, lower, owner=owner, mode=mode)
                stager.ensure_dir("/")
                for source in sources:
                    if source_view.is_dir(source.path):
                        stager.ensure_dir(dest)
                        for name in source_view.children(source.path):
                            stager.copy(
                                source_view,
                                source.path.rstrip("/") + "/" + name,
                                dest.rstrip("/") + "/" + name,
                                keep_owner=keep_owner,
                            )
                    elif is_add and stager.extract_archive(source.host, dest):
                        continue
                    else:
                        target = (
                            dest.rstrip("/") + "/" + source.path.rsplit("/", 1)[-1]
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
        self, instruction: Instruction, state: _State
    ) -> tuple[LayerView, str, str, bool]:
        """Where COPY reads from: the context, an earlier stage or an image."""
        source = instruction.flags.get("from")
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

    def _download_all(self, urls: list[str]) -> list[Path]:
        if not urls:
            return []
        directory = Path(tempfile.mkdtemp(dir=self.scratch_root, prefix="download-"))
        self._downloads.append(directory)
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

    # -- layers and commit ---------------------------------------------------------------

    def _scratch(self) -> _Scratch:
        return _Scratch(self.scratch_root)

    def _store_upper(self, upper: Path, state: _State) -> LayerBlob:
        epoch = self.options.source_date_epoch
        layer = store_layer(
            self.store, lambda out: diff_from_upper(upper, out, source_date_epoch=epoch)
        )
        chain = chain_ids([*(below.diff_id for below in state.layers), layer.diff_id])[-1]
        if not is_unpacked(self.store, chain):
            unpack_layer(self.store, layer.descriptor, layer.diff_id, chain, trusted=True)
        return layer

    def _lowerdirs(self, state: _State) -> list[Path]:
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

    def _commit(self, state: _State) -> StoredImage:
        config = dict(state.config)
        author = config.pop("__author", None)
        env = [str(item) for item in _sequence(config.get("Env"))]
        if not any(item.startswith("PATH=") for item in env):
            config["Env"] = [DEFAULT_PATH, *env]  # as BuildKit does, so `carte run` finds sh
        labels = dict(_mapping(config.get("Labels")))
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


def _join(base: str, path: str) -> str:
    joined = posixpath.normpath(posixpath.join(base or "/", path))
    if path.endswith("/") and joined != "/":
        joined += "/"
    return joined


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _mapping(value: object) -> dict[str, object]:
    return dict(value) if isinstance(value, dict) else {}


def _sequence(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


def _duration_ns(text: str, instruction: Instruction) -> int:
    units = {
        "ns": 1,
        "us": 1_000,
        "ms": 1_000_000,
        "s": 1_000_000_000,
        "m": 60_000_000_000,
        "h": 3_600_000_000_000,
    }
    for suffix in ("ns", "us", "ms", "s", "m", "h"):
        number = text.removesuffix(suffix)
        if number != text:
            try:
                return int(float(number) * units[suffix])
            except ValueError:
                break
    raise DockerfileError(
        f'{instruction.file}:{instruction.line}: HEALTHCHECK: duration "{text}" is invalid; '
        "use e.g. 30s or 1m30s"
    )
