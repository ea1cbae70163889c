"""Docker's ``POST /containers/create`` body as Carte's `ContainerConfig`.

Fields Carte honours are translated; a field Carte cannot honour that is set to anything but
its empty value is refused with `InvalidArgument` naming it (never dropped silently).
"""

from __future__ import annotations

from typing import Any, Literal, cast

from carte.api.containers import (
    ContainerConfig,
    HealthConfig,
    MountSpec,
    PortSpec,
    Resources,
    RestartPolicy,
    Ulimit,
)
from carte.api.errors import InvalidArgument

NANOSECONDS = 1e9
_MountType = Literal["bind", "volume", "tmpfs"]
_RestartName = Literal["no", "on-failure", "always", "unless-stopped"]

# Fields Carte has no equivalent for: set to anything non-empty, create is refused.
_UNSUPPORTED_CONFIG = ("OnBuild", "Shell", "NetworkDisabled", "ArgsEscaped")
_UNSUPPORTED_HOST = (
    "Devices",
    "DeviceRequests",
    "DeviceCgroupRules",
    "VolumesFrom",
    "Links",
    "VolumeDriver",
    "CgroupParent",
    "Runtime",
    "UsernsMode",
    "UTSMode",
    "CgroupnsMode",
    "OomScoreAdj",
    "OomKillDisable",
    "BlkioWeight",
    "BlkioWeightDevice",
    "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps",
    "CpuPeriod",
    "CpuQuota",
    "CpuRealtimePeriod",
    "CpuRealtimeRuntime",
    "CpusetMems",
    "KernelMemory",
    "KernelMemoryTCP",
    "MemoryReservation",
    "MemorySwappiness",
    "StorageOpt",
    "Isolation",
    "MaskedPaths",
    "ReadonlyPaths",
)


def container_config(body: dict[str, Any], name: str) -> ContainerConfig:
    """The config Carte creates for Docker's create `body`; `InvalidArgument` naming the
    field for a field Carte does not support or a value that does not fit."""
    if not isinstance(body, dict):
        raise InvalidArgument("the create body is not a JSON object")
    host: dict[str, Any] = body.get("HostConfig") or {}
    for key in _UNSUPPORTED_CONFIG:
        _refuse_if_set(body, key, "")
    for key in _UNSUPPORTED_HOST:
        _refuse_if_set(host, key, "HostConfig.")
    log_config = host.get("LogConfig") or {}
    if log_config.get("Type") not in (None, "", "json-file"):
        raise InvalidArgument(
            f"Carte does not support the {log_config['Type']!r} log driver (HostConfig.LogConfig);"
            " its containers log as json-file"
        )
    image = body.get("Image") or ""
    if not image:
        raise InvalidArgument("Image is required (Config.Image)")
    privileged = bool(host.get("Privileged"))
    cap_add = list(host.get("CapAdd") or [])
    security_opt = list(host.get("SecurityOpt") or [])
    if privileged:
        cap_add = [*cap_add, "ALL"]
        security_opt = [*security_opt, "seccomp=unconfined"]
    network = host.get("NetworkMode") or "default"
    if network == "bridge":
        network = "default"
    stop_timeout = body.get("StopTimeout")
    aliases, ip = _endpoint(body.get("NetworkingConfig") or {}, network)
    return ContainerConfig(
        image=image,
        name=name,
        cmd=_strings(body.get("Cmd"), "Cmd"),
        entrypoint=_strings(body.get("Entrypoint"), "Entrypoint"),
        env=list(body.get("Env") or []),
        workdir=body.get("WorkingDir") or "",
        user=body.get("User") or "",
        hostname=body.get("Hostname") or "",
        domainname=body.get("Domainname") or "",
        group_add=[str(g) for g in host.get("GroupAdd") or []],
        labels=dict(body.get("Labels") or {}),
        tty=bool(body.get("Tty")),
        open_stdin=bool(body.get("OpenStdin")),
        mounts=_mounts(host),
        resources=resources(host),
        cap_add=cap_add,
        cap_drop=list(host.get("CapDrop") or []),
        security_opt=security_opt,
        read_only=bool(host.get("ReadonlyRootfs")),
        init=bool(host.get("Init")),
        restart=restart_policy(host.get("RestartPolicy") or {}),
        stop_signal=body.get("StopSignal") or "",
        stop_timeout=None if stop_timeout is None else int(stop_timeout),
        healthcheck=_health(body.get("Healthcheck")),
        auto_remove=bool(host.get("AutoRemove")),
        pid_mode=host.get("PidMode") or "",
        ipc_mode=host.get("IpcMode") or "",
        shm_size=int(host.get("ShmSize") or 0),
        network=network,
        network_aliases=aliases,
        ip=ip,
        ports=_ports(host.get("PortBindings") or {}),
        sysctls=dict(host.get("Sysctls") or {}),
        extra_hosts=list(host.get("ExtraHosts") or []),
        dns=list(host.get("Dns") or []),
        dns_search=list(host.get("DnsSearch") or []),
        mac_address=body.get("MacAddress") or "",
        publish_all=bool(host.get("PublishAllPorts")),
    )


def resources(section: dict[str, Any]) -> Resources:
    """Docker's resource fields (of ``HostConfig``, or of an update body) as Carte's."""
    return Resources(
        memory=int(section.get("Memory") or 0),
        memory_swap=int(section.get("MemorySwap") or 0),
        nano_cpus=int(section.get("NanoCpus") or 0),
        cpu_shares=int(section.get("CpuShares") or 0),
        cpuset_cpus=section.get("CpusetCpus") or "",
        pids_limit=max(int(section.get("PidsLimit") or 0), 0),
        ulimits=[
            Ulimit(name=u["Name"], soft=int(u["Soft"]), hard=int(u["Hard"]))
            for u in section.get("Ulimits") or []
        ],
    )


def container_update(body: Any) -> tuple[Resources, RestartPolicy | None]:
    """Docker's update body as Carte's live limits (zero keeps a limit) and restart policy (an
    empty ``RestartPolicy.Name``, as the CLI sends without --restart, keeps it)."""
    if not isinstance(body, dict):
        raise InvalidArgument("the update body is not a JSON object")
    for key in _UNSUPPORTED_HOST:
        _refuse_if_set(body, key, "")
    policy = body.get("RestartPolicy") or {}
    return resources(body), restart_policy(policy) if policy.get("Name") else None


def _endpoint(networking: dict[str, Any], network: str) -> tuple[list[str], str]:
    """Aliases and address from ``NetworkingConfig.EndpointsConfig`` (one network, the one
    ``HostConfig.NetworkMode`` names, as Docker's API 1.41 takes at create)."""
    endpoints: dict[str, Any] = networking.get("EndpointsConfig") or {}
    if not endpoints:
        return [], ""
    names = set(endpoints)
    if len(names) > 1 or not names & {network, "default" if network == "default" else network}:
        if not (network == "default" and names == {"bridge"}):
            raise InvalidArgument(
                f"NetworkingConfig.EndpointsConfig names {sorted(names)}; Carte takes the one "
                f"network HostConfig.NetworkMode names ({network}) and connects others after"
            )
    config = next(iter(endpoints.values())) or {}
    for key in ("Links", "DriverOpts", "MacAddress"):
        _refuse_if_set(config, key, "NetworkingConfig.EndpointsConfig.")
    ipam = config.get("IPAMConfig") or {}
    if ipam.get("IPv6Address") or ipam.get("LinkLocalIPs"):
        raise InvalidArgument("Carte does not support IPv6 or link-local endpoint addresses")
    return [str(a) for a in config.get("Aliases") or []], str(ipam.get("IPv4Address") or "")


def _refuse_if_set(section: dict[str, Any], key: str, prefix: str) -> None:
    value = section.get(key)
    if value in (None, "", 0, False, [], {}, -1):
        return
    raise InvalidArgument(
        f"Carte does not support {prefix}{key} (got {value!r}); "
        "leave it out to create the container"
    )


def _strings(value: Any, field: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{field} must be a list of strings")
    return value


def _mounts(host: dict[str, Any]) -> list[MountSpec]:
    mounts: list[MountSpec] = []
    for bind in host.get("Binds") or []:
        source, _, rest = bind.partition(":")
        target, _, mode = rest.partition(":")
        if not target:
            raise InvalidArgument(f"HostConfig.Binds entry {bind!r} is not SOURCE:TARGET[:ro]")
        kind = "bind" if source.startswith("/") else "volume"
        modes = set(mode.split(",")) if mode else set()
        unknown = modes - {"ro", "rw", "z", "Z"}
        if unknown:
            raise InvalidArgument(
                f"Carte does not support the bind option(s) {sorted(unknown)} in {bind!r}"
            )
        mounts.append(
            MountSpec(
                type=cast(_MountType, kind), source=source, target=target, read_only="ro" in modes
            )
        )
    for mount in host.get("Mounts") or []:
        kind = mount.get("Type") or "volume"
        if kind not in ("bind", "volume", "tmpfs"):
            raise InvalidArgument(f"Carte does not support {kind!r} mounts (HostConfig.Mounts)")
        tmpfs = mount.get("TmpfsOptions") or {}
        mounts.append(
            MountSpec(
                type=cast(_MountType, kind),
                source=mount.get("Source") or "",
                target=mount["Target"],
                read_only=bool(mount.get("ReadOnly")),
                propagation=(mount.get("BindOptions") or {}).get("Propagation") or "",
                tmpfs_size=int(tmpfs.get("SizeBytes") or 0),
                tmpfs_mode=int(tmpfs.get("Mode") or 0),
            )
        )
    for target, options in (host.get("Tmpfs") or {}).items():
        mounts.append(MountSpec(type="tmpfs", target=target, **_tmpfs_options(target, options)))
    return mounts


def _tmpfs_options(target: str, options: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key == "size":
            found["tmpfs_size"] = _size(value, target)
        elif key == "mode":
            found["tmpfs_mode"] = int(value, 8)
        elif key in ("ro", "rw"):
            found["read_only"] = key == "ro"
        elif key not in ("exec", "noexec", "nosuid", "nodev"):
            raise InvalidArgument(f"Carte does not support the tmpfs option {option!r} on {target}")
    return found


def _size(text: str, target: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    try:
        if text and text[-1].lower() in units:
            return int(float(text[:-1]) * units[text[-1].lower()])
        return int(text)
    except ValueError:
        raise InvalidArgument(f"tmpfs size {text!r} on {target} is not a size") from None


def restart_policy(policy: dict[str, Any]) -> RestartPolicy:
    name = policy.get("Name") or "no"
    if name not in ("no", "on-failure", "always", "unless-stopped"):
        raise InvalidArgument(f"HostConfig.RestartPolicy.Name {name!r} is not a restart policy")
    return RestartPolicy(
        name=cast(_RestartName, name), maximum_retry_count=int(policy.get("MaximumRetryCount") or 0)
    )


def _health(check: dict[str, Any] | None) -> HealthConfig | None:
    if not check or not check.get("Test"):
        return None

    def seconds(key: str, default: float) -> float:
        value = check.get(key) or 0
        return value / NANOSECONDS if value else default

    return HealthConfig(
        test=list(check["Test"]),
        interval=seconds("Interval", 30.0),
        timeout=seconds("Timeout", 30.0),
        retries=int(check.get("Retries") or 3),
        start_period=seconds("StartPeriod", 0.0),
        start_interval=seconds("StartInterval", 0.0),
    )


def _ports(bindings: dict[str, Any]) -> list[PortSpec]:
    ports: list[PortSpec] = []
    for key, hosts in bindings.items():
        number, _, protocol = key.partition("/")
        if protocol not in ("", "tcp", "udp"):
            raise InvalidArgument(f"Carte does not support {protocol} ports ({key})")
        for host in hosts or [{}]:
            ports.append(
                PortSpec(
                    container_port=int(number),
                    protocol="udp" if protocol == "udp" else "tcp",
                    host_ip=host.get("HostIp") or "",
                    host_port=int(host.get("HostPort") or 0),
                )
            )
    return ports
