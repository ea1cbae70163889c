"""Docker's `run`/`create` flags: the argparse definitions and their translation into the JSON
body of `CreateContainer` (field names of `carte.api.containers.ContainerConfig`).

Values are checked here so a typo is one line naming the flag and the accepted forms
(`RunOptionError`, exit 125 in the caller) before anything reaches the daemon.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs client start-up time; mypy still reads these
if TYPE_CHECKING:
    import argparse  # imported by carte.cli.parser only when a parser is built
    from typing import Any


class RunOptionError(Exception):
    """A flag's value is malformed; `str()` is the one line to print."""


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: str, flag: str) -> int:
    """512m, 1g, 100k, 1048576, 1.5g -> bytes; `RunOptionError` naming the flag otherwise."""
    text = value.strip().lower()
    if text.endswith("ib"):
        text = text[:-2]
    elif len(text) > 1 and text.endswith("b") and text[-2] in "kmgt":
        text = text[:-1]
    number, unit = text, ""
    if text and text[-1] in _SIZE_UNITS:
        number, unit = text[:-1], text[-1]
    try:
        size = float(number)
    except ValueError:
        raise RunOptionError(
            f'invalid {flag} "{value}": use a number with an optional unit b, k, m or g '
            "(e.g. 512m, 1g)"
        ) from None
    if size < 0:
        raise RunOptionError(f'invalid {flag} "{value}": a size cannot be negative')
    return int(size * _SIZE_UNITS[unit])


def _parse_swap(value: str) -> int:
    return -1 if value.strip() == "-1" else parse_size(value, "--memory-swap")


def _parse_cpus(value: str) -> int:
    try:
        cpus = float(value)
    except ValueError:
        cpus = -1.0
    if cpus <= 0:
        raise RunOptionError(f'invalid --cpus "{value}": use a positive number such as 0.5 or 2')
    return int(cpus * 1_000_000_000)


def _parse_int(value: str, flag: str, minimum: int = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum and not (flag == "--pids-limit" and number == -1):
        raise RunOptionError(f'invalid {flag} "{value}": use a whole number >= {minimum}')
    return number


def _parse_ulimit(value: str) -> dict[str, Any]:
    name, sep, limits = value.partition("=")
    soft_text, _, hard_text = limits.partition(":")
    try:
        soft = int(soft_text)
        hard = int(hard_text) if hard_text else soft
    except ValueError:
        soft = hard = -2
    if not sep or not name or soft < -1 or hard < -1:
        raise RunOptionError(
            f'invalid --ulimit "{value}": use NAME=SOFT[:HARD], e.g. nofile=1024:2048'
        )
    return {"name": name, "soft": soft, "hard": hard}


def _parse_volume(value: str) -> dict[str, Any]:
    """-v SRC:DST[:ro|rw|z|Z|...], -v NAME:DST, -v DST (an anonymous volume)."""
    parts = value.split(":")
    if len(parts) == 1:
        return {"type": "volume", "source": "", "target": parts[0]}
    if len(parts) > 3 or not parts[1]:
        raise RunOptionError(
            f'invalid -v "{value}": use SRC:DST[:ro], NAME:DST[:ro] or DST (SRC is an '
            "absolute host path, NAME a volume)"
        )
    source, target = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    unknown = [
        o
        for o in options
        if o
        not in ("ro", "rw", "z", "Z", "rprivate", "private", "rshared", "shared", "rslave", "slave")
    ]
    if unknown:
        raise RunOptionError(f'invalid -v "{value}": unknown option "{unknown[0]}"; use ro or rw')
    propagation = next((o for o in options if "private" in o or "shared" in o or "slave" in o), "")
    mount: dict[str, Any] = {
        "type": "bind" if source.startswith(("/", ".")) else "volume",
        "source": os.path.abspath(source) if source.startswith(".") else source,
        "target": target,
        "read_only": "ro" in options,
    }
    if propagation:
        mount["propagation"] = propagation
    return mount


def _parse_mount(value: str) -> dict[str, Any]:
    """--mount type=bind|volume|tmpfs,source=..,target=..[,readonly][,tmpfs-size=..]"""
    fields: dict[str, str] = {}
    for item in value.split(","):
        key, sep, val = item.partition("=")
        fields[key.strip().lower()] = val if sep else "true"
    kind = fields.pop("type", "volume")
    target = fields.pop("target", "") or fields.pop("destination", "") or fields.pop("dst", "")
    source = fields.pop("source", "") or fields.pop("src", "")
    if kind not in ("bind", "volume", "tmpfs") or not target:
        raise RunOptionError(
            f'invalid --mount "{value}": use type=bind|volume|tmpfs,source=SRC,target=DST'
            "[,readonly]"
        )
    mount: dict[str, Any] = {"type": kind, "source": source, "target": target}
    readonly = fields.pop("readonly", fields.pop("ro", "false"))
    mount["read_only"] = readonly.lower() in ("true", "1", "")
    if "bind-propagation" in fields:
        mount["propagation"] = fields.pop("bind-propagation")
    if "tmpfs-size" in fields:
        mount["tmpfs_size"] = parse_size(fields.pop("tmpfs-size"), "--mount tmpfs-size")
    if "tmpfs-mode" in fields:
        try:
            mount["tmpfs_mode"] = int(fields.pop("tmpfs-mode"), 8)
        except ValueError:
            raise RunOptionError(
                f'invalid --mount "{value}": tmpfs-mode is octal, e.g. 1777'
            ) from None
    fields.pop("volume-nocopy", None)
    if fields:
        raise RunOptionError(f'invalid --mount "{value}": unknown key "{next(iter(fields))}"')
    if kind == "bind" and not source:
        raise RunOptionError(f'invalid --mount "{value}": a bind mount needs source=/host/path')
    return mount


def _parse_port(value: str) -> list[dict[str, Any]]:
    """-p [IP:][HOST:]CONTAINER[/PROTO] (ranges HOST-HOST:C-C allowed)."""
    spec, _, protocol = value.partition("/")
    protocol = protocol or "tcp"
    parts = spec.rsplit(":", 2)
    host_ip, host, container = "", "", parts[-1]
    if len(parts) == 2:
        host = parts[0]
    elif len(parts) == 3:
        host_ip, host = parts[0].strip("[]"), parts[1]

    def port_range(text: str) -> list[int]:
        low, _, high = text.partition("-")
        first, last = int(low), int(high or low)
        if not (0 < first < 65536 and 0 < last < 65536):
            outside = first if not 0 < first < 65536 else last
            raise RunOptionError(f'invalid -p "{value}": port {outside} is out of range (1-65535)')
        if first > last:
            raise ValueError(text)
        return list(range(first, last + 1))

    try:
        containers = port_range(container)
        hosts = port_range(host) if host else [0] * len(containers)
        if protocol not in ("tcp", "udp") or len(hosts) != len(containers):
            raise ValueError(value)
    except ValueError:
        raise RunOptionError(
            f'invalid -p "{value}": use [IP:][HOST:]CONTAINER[/tcp|udp], e.g. -p 8080:80'
        ) from None
    return [
        {"container_port": c, "host_port": h, "host_ip": host_ip, "protocol": protocol}
        for h, c in zip(hosts, containers, strict=True)
    ]


def _parse_add_host(value: str) -> str:
    """--add-host NAME:IP (or NAME=IP) -> "NAME:IP", the IP checked."""
    import ipaddress

    name, sep, address = value.partition("=") if "=" in value else value.partition(":")
    try:
        ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        sep = ""
    if not sep or not name:
        raise RunOptionError(f'invalid --add-host "{value}": use HOST:IP, e.g. db:10.0.0.5')
    return f"{name}:{address.strip('[]')}"


def _parse_duration(value: str, flag: str) -> float:
    """30s, 1m30s, 500ms, 2h, 10 (seconds) -> seconds."""
    text = value.strip()
    units = (("ms", 0.001), ("h", 3600.0), ("m", 60.0), ("s", 1.0))
    total, number = 0.0, ""
    index = 0
    try:
        if text.replace(".", "", 1).isdigit():
            return float(text)
        while index < len(text):
            char = text[index]
            if char.isdigit() or char == ".":
                number += char
                index += 1
                continue
            for unit, scale in units:
                if text.startswith(unit, index):
                    total += float(number) * scale
                    number = ""
                    index += len(unit)
                    break
            else:
                raise ValueError(text)
        if number:
            raise ValueError(text)
    except ValueError:
        raise RunOptionError(
            f'invalid {flag} "{value}": use a duration such as 30s, 1m or 500ms'
        ) from None
    return total


def _parse_restart(value: str) -> dict[str, Any]:
    name, _, count = value.partition(":")
    if name not in ("no", "on-failure", "always", "unless-stopped") or (
        count and (name != "on-failure" or not count.isdigit())
    ):
        raise RunOptionError(
            f'invalid --restart "{value}": use no, on-failure[:MAX], always or unless-stopped'
        )
    return {"name": name, "maximum_retry_count": int(count or 0)}


def read_env_file(path: str) -> list[str]:
    """--env-file: KEY=VALUE lines (a bare KEY takes the client's value)."""
    return [item for item in map(env_item, _file_lines(path, "--env-file")) if item]


def _file_lines(path: str, flag: str) -> list[str]:
    """The lines of a --env-file or --label-file, blank ones and # comments skipped."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = [line.strip() for line in file.read().splitlines()]
    except OSError as error:
        raise RunOptionError(f'{flag} "{path}": {error.strerror}; check the path') from None
    return [line for line in lines if line and not line.startswith("#")]


def env_item(item: str) -> str:
    """KEY=VALUE as given; a bare KEY takes the client's value (and is dropped if unset)."""
    if "=" in item:
        return item
    return f"{item}={os.environ[item]}" if item in os.environ else ""


def _parse_sysctl(value: str, network: str) -> tuple[str, str]:
    """--sysctl KEY=VALUE, refused unless the container's own namespaces isolate KEY."""
    from carte.api.containers import namespaced_sysctl

    key, sep, val = value.partition("=")
    if not sep or not key:
        raise RunOptionError(
            f'invalid --sysctl "{value}": use KEY=VALUE, e.g. net.core.somaxconn=1024'
        )
    if not namespaced_sysctl(key):
        raise RunOptionError(
            f'invalid --sysctl "{value}": {key} is not namespaced, it would change the host; '
            "only net.*, fs.mqueue.* and kernel.shm*/msg*/sem are allowed"
        )
    if network == "host" and key.startswith("net."):
        raise RunOptionError(
            f'invalid --sysctl "{value}": {key} would change the host\'s network with '
            "--network host; drop one of them"
        )
    return key, val


def _parse_dns(value: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise RunOptionError(f'invalid --dns "{value}": use a name server\'s IP address') from None


def _parse_mac(value: str) -> str:
    import re

    if not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", value):
        raise RunOptionError(f'invalid --mac-address "{value}": use e.g. 02:42:ac:11:00:02')
    return value.lower()


def claim_cidfile(path: str) -> None:
    """--cidfile: create the file now (empty), refused if it exists, as Docker does so two
    containers never share one; `fill_cidfile` writes the ID once the container exists."""
    if not path:
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        raise RunOptionError(
            f'container ID file "{path}" exists; make sure the other container is not '
            "running or delete the file"
        ) from None
    except OSError as error:
        raise RunOptionError(f'--cidfile "{path}": {error.strerror}; check the path') from None


def fill_cidfile(path: str, container_id: str) -> None:
    """The created container's ID into the --cidfile; with no ID (the create failed), the
    claimed file is removed."""
    if not path:
        return
    if not container_id:
        try:
            os.unlink(path)
        except OSError:  # gone already; contextlib.suppress would cost the client an import
            pass
        return
    with open(path, "w", encoding="ascii") as file:
        file.write(container_id)


def check_platform(value: str, flag: str) -> None:
    """A `--platform` Docker users pass: this host's is fine (nothing to do), another one is
    refused with the reason (Carte runs and builds for the host's platform only)."""
    if not value:
        return
    import platform

    machine = platform.machine().lower()
    host = "linux/" + {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)
    wanted = value.lower().replace("x86_64", "amd64").replace("aarch64", "arm64")
    if wanted not in (host, host.split("/")[1]) and not wanted.startswith(host + "/"):
        raise RunOptionError(
            f'{flag} "{value}" is not this host\'s platform ({host}); Carte runs and builds for '
            "the host's platform only (no emulation): drop the flag or use a host of that kind"
        )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `carte create` and `carte run`, Docker's names."""
    import argparse  # only with a parser: `ps` and `inspect` start without it

    add = parser.add_argument
    add("--name", default="", help="assign a name to the container")
    add("-e", "--env", action="append", default=[], help="set an environment variable")
    add("--env-file", action="append", default=[], help="read environment variables from a file")
    add("-w", "--workdir", default="", help="working directory inside the container")
    add("-u", "--user", default="", help="user name or uid[:gid]")
    add("-h", "--hostname", default="", help="container host name")
    add("--domainname", default="", help="container NIS domain name")
    add("--group-add", action="append", default=[], help="another group to join (name or gid)")
    add("--platform", default="", help="OS/ARCH: only this host's is accepted (one platform)")
    add("-v", "--volume", action="append", default=[], help="bind mount or volume SRC:DST[:ro]")
    add("--mount", action="append", default=[], help="type=bind|volume|tmpfs,source=,target=")
    add("--tmpfs", action="append", default=[], help="mount a tmpfs at PATH[:size=..]")
    add("-m", "--memory", help="memory limit (e.g. 512m)")
    add("--memory-swap", help="memory plus swap limit; -1 for unlimited swap")
    add("--cpus", help="number of CPUs (e.g. 1.5)")
    add("-c", "--cpu-shares", help="CPU shares (relative weight)")
    add("--cpuset-cpus", default="", help="CPUs allowed (e.g. 0-2,4)")
    add("--pids-limit", help="maximum number of processes (-1 unlimited)")
    add("--ulimit", action="append", default=[], help="ulimit NAME=SOFT[:HARD]")
    add("--cap-add", action="append", default=[], help="add a Linux capability")
    add("--cap-drop", action="append", default=[], help="drop a Linux capability")
    add("--security-opt", action="append", default=[], help="seccomp=..., no-new-privileges")
    add(
        "--privileged",
        action="store_true",
        help="every capability and no seccomp filter (unlike Docker's, host devices stay "
        "hidden and /sys read-only)",
    )
    add("--add-host", action="append", default=[], help="add HOST:IP to /etc/hosts")
    add("--read-only", action="store_true", help="mount the root filesystem read-only")
    add("--init", action="store_true", help="run Carte's init as PID 1 (signals, zombies)")
    add("--restart", default="no", help="no, on-failure[:MAX], always, unless-stopped")
    add("--stop-signal", default="", help="signal to stop the container (default TERM)")
    add("--stop-timeout", help="seconds to wait before killing on stop (default 10)")
    add("--health-cmd", help="command to check health")
    add("--health-interval", help="time between checks (default 30s)")
    add("--health-timeout", help="maximum time of one check (default 30s)")
    add("--health-retries", help="failures before unhealthy (default 3)")
    add("--health-start-period", help="grace period before failures count (default 0s)")
    add("--health-start-interval", help="time between checks during the start period")
    add("--no-healthcheck", action="store_true", help="disable the image's HEALTHCHECK")
    add("-l", "--label", action="append", default=[], help="set a label KEY=VALUE")
    add("--label-file", action="append", default=[], help="read KEY=VALUE labels from a file")
    add("--cidfile", default="", help="write the container ID to this file (must not exist)")
    add("-q", "--quiet", action="store_true", help="suppress the pull output")
    add("--entrypoint", help="override the image's entrypoint")
    add("--log-opt", action="append", default=[], help="max-size=SIZE, max-file=N")
    add("--pid", default="", help="host or container:NAME: the pid namespace to share")
    add("--ipc", default="", help="private (default), shareable, container:NAME or host")
    add("--shm-size", default="", help="size of /dev/shm (e.g. 256m; default 64m)")
    add("--network", "--net", default="default", help="none, host, default or a network name")
    add("--network-alias", action="append", default=[], help="DNS alias on the network")
    add("--ip", default="", help="IPv4 address on the network")
    add("--mac-address", default="", help="MAC address of its interface (e.g. 02:42:ac:11:00:02)")
    add("--dns", action="append", default=[], help="a name server for /etc/resolv.conf")
    add("--dns-search", action="append", default=[], help="a search domain for /etc/resolv.conf")
    add("--sysctl", action="append", default=[], help="a namespaced kernel parameter KEY=VALUE")
    add("-p", "--publish", action="append", default=[], help="publish a port HOST:CONTAINER")
    add("-P", "--publish-all", action="store_true", help="publish every exposed port")
    add("-i", "--interactive", action="store_true", help="keep stdin open")
    add("-t", "--tty", action="store_true", help="allocate a terminal")
    add("image", help="image name or id")
    add("command", nargs=argparse.REMAINDER, help="command and arguments")


def container_config(args: argparse.Namespace) -> dict[str, Any]:
    """The `ContainerConfig` JSON for parsed run flags; `RunOptionError` for a bad value."""
    check_platform(args.platform, "--platform")
    env = [item for path in args.env_file for item in read_env_file(path)]
    env += [item for item in (env_item(e) for e in args.env) if item]
    resources: dict[str, Any] = {}
    if args.memory is not None:
        resources["memory"] = parse_size(args.memory, "--memory")
        if resources["memory"] and resources["memory"] < 6 * 1024 * 1024:
            raise RunOptionError(f'invalid --memory "{args.memory}": the minimum is 6m')
    if args.memory_swap is not None:
        resources["memory_swap"] = _parse_swap(args.memory_swap)
    if args.cpus is not None:
        resources["nano_cpus"] = _parse_cpus(args.cpus)
    if args.cpu_shares is not None:
        resources["cpu_shares"] = _parse_int(args.cpu_shares, "--cpu-shares", 2)
    if args.cpuset_cpus:
        if not all(c.isdigit() or c in ",-" for c in args.cpuset_cpus):
            raise RunOptionError(
                f'invalid --cpuset-cpus "{args.cpuset_cpus}": use a list like 0-2,4'
            )
        resources["cpuset_cpus"] = args.cpuset_cpus
    if args.pids_limit is not None:
        resources["pids_limit"] = _parse_int(args.pids_limit, "--pids-limit", 1)
    if args.ulimit:
        resources["ulimits"] = [_parse_ulimit(u) for u in args.ulimit]
    mounts = [_parse_volume(v) for v in args.volume] + [_parse_mount(m) for m in args.mount]
    for tmpfs in args.tmpfs:
        target, _, options = tmpfs.partition(":")
        mount: dict[str, Any] = {"type": "tmpfs", "target": target}
        for option in options.split(",") if options else []:
            key, _, val = option.partition("=")
            if key == "size":
                mount["tmpfs_size"] = parse_size(val, "--tmpfs size")
        mounts.append(mount)
    log: dict[str, Any] = {}
    for option in args.log_opt:
        key, sep, val = option.partition("=")
        if key == "max-size" and sep:
            log["max_size"] = parse_size(val, "--log-opt max-size")
        elif key == "max-file" and sep:
            log["max_file"] = _parse_int(val, "--log-opt max-file", 1)
        else:
            raise RunOptionError(
                f'invalid --log-opt "{option}": use max-size=SIZE (e.g. 10m) or max-file=N'
            )
    labels = {}
    from_files = [line for path in args.label_file for line in _file_lines(path, "--label-file")]
    for label in [*from_files, *args.label]:
        key, _, val = label.partition("=")
        if not key:
            raise RunOptionError(f'invalid --label "{label}": use KEY=VALUE')
        labels[key] = val
    config: dict[str, Any] = {
        "image": args.image,
        "name": args.name,
        "env": env,
        "workdir": args.workdir,
        "user": args.user,
        "hostname": args.hostname,
        "domainname": args.domainname,
        "group_add": list(args.group_add),
        "labels": labels,
        "tty": args.tty,
        "open_stdin": args.interactive,
        "mounts": mounts,
        "resources": resources,
        "cap_add": [*args.cap_add, *(["ALL"] if args.privileged else [])],
        "cap_drop": args.cap_drop,
        "security_opt": [
            *args.security_opt,
            *(["seccomp=unconfined", "no-new-privileges=false"] if args.privileged else []),
        ],
        "extra_hosts": [_parse_add_host(value) for value in args.add_host],
        "read_only": args.read_only,
        "init": args.init,
        "restart": _parse_restart(args.restart),
        "stop_signal": args.stop_signal,
        "network": args.network,
        "network_aliases": args.network_alias,
        "ip": args.ip,
        "mac_address": _parse_mac(args.mac_address) if args.mac_address else "",
        "dns": [_parse_dns(value) for value in args.dns],
        "dns_search": args.dns_search,
        "sysctls": dict(_parse_sysctl(value, args.network) for value in args.sysctl),
        "ports": [port for value in args.publish for port in _parse_port(value)],
        "publish_all": args.publish_all,
        "log": log,
        "auto_remove": bool(getattr(args, "rm", False)),
    }
    # Checked by the daemon (carte.handlers.containers), which knows what it can run.
    if args.pid:
        config["pid_mode"] = args.pid
    if args.ipc:
        config["ipc_mode"] = args.ipc
    if args.shm_size:
        config["shm_size"] = parse_size(args.shm_size, "--shm-size")
    if args.command:
        config["cmd"] = args.command
    if args.entrypoint is not None:
        config["entrypoint"] = [args.entrypoint] if args.entrypoint else []
    if args.stop_timeout is not None:
        config["stop_timeout"] = _parse_int(args.stop_timeout, "--stop-timeout", -1)
    health = _health(args)
    if health is not None:
        config["healthcheck"] = health
    if config["auto_remove"] and config["restart"]["name"] != "no":
        raise RunOptionError("--rm and --restart cannot be combined; choose one")
    return config


def _health(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.no_healthcheck:
        return {"test": ["NONE"]}
    given = (
        args.health_cmd,
        args.health_interval,
        args.health_timeout,
        args.health_retries,
        args.health_start_period,
        args.health_start_interval,
    )
    if all(value is None for value in given):
        return None
    if args.health_cmd is None:
        raise RunOptionError("--health-* flags need --health-cmd (the check to run)")
    health: dict[str, Any] = {"test": ["CMD-SHELL", args.health_cmd]}
    if args.health_interval is not None:
        health["interval"] = _parse_duration(args.health_interval, "--health-interval")
    if args.health_timeout is not None:
        health["timeout"] = _parse_duration(args.health_timeout, "--health-timeout")
    if args.health_retries is not None:
        health["retries"] = _parse_int(args.health_retries, "--health-retries", 0)
    if args.health_start_period is not None:
        health["start_period"] = _parse_duration(args.health_start_period, "--health-start-period")
    if args.health_start_interval is not None:
        health["start_interval"] = _parse_duration(
            args.health_start_interval, "--health-start-interval"
        )
    return health
