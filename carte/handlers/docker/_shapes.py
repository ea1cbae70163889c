"""Carte's replies in Docker's shapes (PascalCase keys, Unix times) and Docker's query
arguments in Carte's (flags, filters)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from quart import Response

from carte.api.containers import ContainerDetails, ContainerSummary, PortSpec, Volume
from carte.api.errors import InvalidArgument
from carte.api.images import ImageDetails, ImageSummary
from carte.api.networks import Network
from carte.api.timestamps import parse_rfc3339

JSON = "application/json"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time: what Docker shows for "never"
_encoder = msgspec.json.Encoder()


def reply(value: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(value), status=status, content_type=JSON)


def flag(args: Any, name: str, default: bool = False) -> bool:
    """A Docker query flag: "1"/"true" (any case) is on, "0"/"false"/"" off."""
    value = args.get(name)
    if value is None:
        return default
    return str(value).lower() in ("1", "true", "yes")


def filters(args: Any) -> dict[str, list[str]]:
    """Docker's ``filters`` query argument (a JSON map of lists, or of {value: true} maps,
    the older form) as Carte's; `InvalidArgument` naming it when it is not JSON."""
    text = args.get("filters") or ""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError:
        raise InvalidArgument(f"filters={text!r} is not JSON") from None
    if not isinstance(raw, dict):
        raise InvalidArgument(f"filters={text!r} is not a JSON object")
    return {
        str(key): [str(v) for v in (value if isinstance(value, list) else value.keys())]
        for key, value in raw.items()
        if isinstance(value, (list, dict))
    }


def unix_time(rfc3339: str) -> int:
    try:
        return int(parse_rfc3339(rfc3339)) if rfc3339 else 0
    except ValueError:
        return 0


def _port_rows(ports: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for port in ports:
        row: dict[str, Any] = {"PrivatePort": port.container_port, "Type": port.protocol}
        if port.host_port:
            row.update(IP=port.host_ip or "0.0.0.0", PublicPort=port.host_port)
        rows.append(row)
    return rows


def container_summary(summary: ContainerSummary, details: ContainerDetails) -> dict[str, Any]:
    """One row of ``GET /containers/json`` (clients such as Testcontainers read its networks)."""
    return {
        "Id": summary.id,
        "Names": ["/" + summary.name],
        "Image": summary.image,
        "ImageID": details.image_id,
        "Command": summary.command,
        "Created": unix_time(summary.created),
        "State": summary.state,
        "Status": summary.status,
        "Ports": _port_rows(_published(details) or summary.ports),
        "Labels": summary.labels,
        "SizeRw": 0,
        "SizeRootFs": 0,
        "HostConfig": {"NetworkMode": details.config.network},
        "NetworkSettings": {"Networks": _networks(details)},
        "Mounts": _mounts(details),
    }


def _published(details: ContainerDetails) -> list[PortSpec]:
    """The ports as published (a random host port resolved), once the container runs."""
    return [port for endpoint in details.endpoints for port in endpoint.ports]


def _port_map(ports: list[PortSpec]) -> dict[str, list[dict[str, str]]]:
    mapped: dict[str, list[dict[str, str]]] = {}
    for port in ports:
        mapped.setdefault(f"{port.container_port}/{port.protocol}", []).append(
            {"HostIp": port.host_ip or "0.0.0.0", "HostPort": str(port.host_port)}
        )
    return mapped


def _networks(details: ContainerDetails) -> dict[str, dict[str, Any]]:
    return {
        endpoint.network: {
            "IPAddress": endpoint.ip_address,
            "IPPrefixLen": endpoint.prefix_len,
            "Gateway": endpoint.gateway,
            "MacAddress": endpoint.mac_address,
            "Aliases": endpoint.aliases or None,
            "NetworkID": endpoint.network,
        }
        for endpoint in details.endpoints
    }


def _mounts(details: ContainerDetails) -> list[dict[str, Any]]:
    return [
        {
            "Type": m.type,
            **({"Name": m.source} if m.type == "volume" else {}),
            "Source": m.source,
            "Destination": m.target,
            "Mode": "ro" if m.read_only else "",
            "RW": not m.read_only,
            "Propagation": m.propagation,
        }
        for m in details.config.mounts
        if m.type != "tmpfs"
    ]


def container_inspect(details: ContainerDetails) -> dict[str, Any]:
    """``GET /containers/{id}/json`` in Docker's shape."""
    config, state = details.config, details.state
    resources, command = config.resources, [*(config.entrypoint or []), *(config.cmd or [])]
    ports = _port_map(config.ports)
    networks = _networks(details)
    first: dict[str, Any] = next(iter(networks.values()), {})
    health = state.health
    return {
        "Id": details.id,
        "Created": details.created,
        "Path": command[0] if command else "",
        "Args": command[1:],
        "State": {
            "Status": state.status,
            "Running": state.running,
            "Paused": state.paused,
            "Restarting": state.restarting,
            "OOMKilled": state.oom_killed,
            "Dead": state.status == "dead",
            "Pid": state.pid,
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": state.started_at or ZERO_TIME,
            "FinishedAt": state.finished_at or ZERO_TIME,
            **(
                {"Health": {"Status": health.status, "FailingStreak": health.failing_streak}}
                if health
                else {}
            ),
        },
        "Image": details.image_id,
        "Name": "/" + details.name,
        "RestartCount": details.restart_count,
        "LogPath": details.log_path,
        "Driver": "overlay",
        "Platform": "linux",
        "Config": {
            "Hostname": config.hostname,
            "Domainname": config.domainname,
            "User": config.user,
            "AttachStdin": False,
            "AttachStdout": not config.tty,
            "AttachStderr": not config.tty,
            "Tty": config.tty,
            "OpenStdin": config.open_stdin,
            "StdinOnce": False,
            "Env": config.env,
            "Cmd": config.cmd,
            "Entrypoint": config.entrypoint,
            "Image": details.image,
            "WorkingDir": config.workdir,
            "Labels": config.labels,
            "StopSignal": config.stop_signal or None,
            "ExposedPorts": {key: {} for key in ports} or None,
        },
        "HostConfig": {
            "Memory": resources.memory,
            "MemorySwap": resources.memory_swap,
            "NanoCpus": resources.nano_cpus,
            "CpuShares": resources.cpu_shares,
            "CpusetCpus": resources.cpuset_cpus,
            "PidsLimit": resources.pids_limit or None,
            "Ulimits": [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in resources.ulimits]
            or None,
            "CapAdd": config.cap_add or None,
            "CapDrop": config.cap_drop or None,
            "SecurityOpt": config.security_opt or None,
            "ReadonlyRootfs": config.read_only,
            "Init": config.init,
            "AutoRemove": config.auto_remove,
            "RestartPolicy": {
                "Name": config.restart.name,
                "MaximumRetryCount": config.restart.maximum_retry_count,
            },
            "NetworkMode": config.network,
            "PidMode": config.pid_mode,
            "IpcMode": config.ipc_mode,
            "GroupAdd": list(config.group_add) or None,
            "ShmSize": config.shm_size or 64 << 20,
            "PortBindings": ports,
            "PublishAllPorts": config.publish_all,
            "ExtraHosts": config.extra_hosts or None,
            "Dns": config.dns,
            "DnsSearch": config.dns_search,
            "Sysctls": config.sysctls or None,
            "Tmpfs": {
                m.target: f"size={m.tmpfs_size}" if m.tmpfs_size else ""
                for m in config.mounts
                if m.type == "tmpfs"
            }
            or None,
            "Privileged": "ALL" in config.cap_add and "seccomp=unconfined" in config.security_opt,
            "LogConfig": {"Type": "json-file", "Config": {}},
        },
        "Mounts": _mounts(details),
        "NetworkSettings": {
            "IPAddress": first.get("IPAddress", ""),
            "IPPrefixLen": first.get("IPPrefixLen", 0),
            "Gateway": first.get("Gateway", ""),
            "MacAddress": first.get("MacAddress", ""),
            "Ports": _port_map(_published(details)) or ports,
            "Networks": networks,
        },
    }


def image_rows(images: list[ImageSummary]) -> list[dict[str, Any]]:
    """``GET /images/json``: one row per image id, its tags gathered."""
    rows: dict[str, dict[str, Any]] = {}
    for image in images:
        row = rows.setdefault(
            image.id,
            {
                "Id": image.id,
                "ParentId": "",
                "RepoTags": [],
                "RepoDigests": [],
                "Created": unix_time(image.created),
                "Size": image.size,
                "VirtualSize": image.size,
                "SharedSize": -1,
                "Labels": {},
                "Containers": -1,
            },
        )
        if image.repository and image.repository != "<none>":
            row["RepoTags"].append(f"{image.repository}:{image.tag}")
            if image.digest:
                row["RepoDigests"].append(f"{image.repository}@{image.digest}")
    return list(rows.values())


def image_inspect(image: ImageDetails) -> dict[str, Any]:
    return {
        "Id": image.id,
        "RepoTags": image.repo_tags,
        "RepoDigests": [],
        "Parent": "",
        "Comment": "",
        "Created": image.created or ZERO_TIME,
        "Architecture": image.architecture,
        "Os": image.os,
        "Size": image.size,
        "VirtualSize": image.size,
        "Author": "",
        "Config": {
            "Cmd": image.cmd,
            "Entrypoint": image.entrypoint,
            "Env": image.env,
            "WorkingDir": image.working_dir,
            "User": image.user,
            "Labels": image.labels,
            "StopSignal": image.stop_signal or None,
            "ExposedPorts": {port: {} for port in image.exposed_ports} or None,
            "Volumes": {volume: {} for volume in image.volumes} or None,
        },
        "RootFS": {"Type": "layers", "Layers": image.layers},
        "GraphDriver": {"Name": "overlay", "Data": None},
        "Metadata": {"LastTagTime": ZERO_TIME},
    }


def network_shape(network: Network) -> dict[str, Any]:
    subnet = {"Subnet": network.subnet, "Gateway": network.gateway} if network.subnet else None
    default = network.name in ("default", "bridge")
    return {
        "Name": network.name,
        "Id": network.id,
        "Created": network.created,
        "Scope": "swarm" if network.driver == "overlay" else "local",
        "Driver": network.driver,
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": [subnet] if subnet else []},
        "Internal": network.internal,
        "Attachable": False,
        "Ingress": False,
        "ConfigOnly": False,
        "Containers": {
            member.container_id: {
                "Name": member.name,
                "EndpointID": "",
                "MacAddress": member.mac_address,
                "IPv4Address": member.ip_address,
                "IPv6Address": "",
            }
            for member in network.containers
        },
        # as dockerd: only the default network says its bridge; a user network has the options
        # it was created with, none here (Compose recreates a network whose options differ)
        "Options": (
            {"com.docker.network.bridge.name": network.bridge}
            if default
            else {"encrypted": "true"}
            if network.encrypted
            else {}
        ),
        "Labels": network.labels,
    }


def volume_shape(volume: Volume) -> dict[str, Any]:
    return {
        "Name": volume.name,
        "Driver": volume.driver,
        "Mountpoint": volume.mountpoint,
        "CreatedAt": volume.created,
        "Labels": volume.labels,
        "Scope": "local",
        "Options": dict(volume.options),
    }
