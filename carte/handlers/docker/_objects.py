"""Docker's image, network and volume routes, each one Carte command on the bus."""

from __future__ import annotations

import json

from quart import Response, request
from quart_trio import QuartTrio

from carte.api.errors import InvalidArgument
from carte.api.events import (
    CommitContainer,
    ConnectNetwork,
    CreateNetwork,
    CreateVolume,
    DisconnectNetwork,
    InspectContainer,
    InspectImage,
    InspectNetwork,
    InspectVolume,
    ListImages,
    ListNetworks,
    ListVolumes,
    PullImage,
    RemoveImage,
    RemoveNetwork,
    RemoveVolume,
    ShowImageHistory,
    TagImage,
)
from carte.engine import HandlerContext
from carte.handlers.docker._shapes import (
    filters,
    flag,
    image_inspect,
    image_rows,
    network_shape,
    reply,
    unix_time,
    volume_shape,
)


def add_object_routes(app: QuartTrio, ctx: HandlerContext) -> None:
    bus = ctx.bus

    # --- images -------------------------------------------------------------------------------

    @app.get("/images/json")
    async def list_images() -> Response:
        args = request.args
        images = await bus.request(ListImages(all=flag(args, "all"), filters=filters(args)))
        return reply(image_rows(images))

    @app.get("/images/<path:ref>/json")
    async def inspect_image(ref: str) -> Response:
        return reply(image_inspect(await bus.request(InspectImage(ref=ref))))

    @app.post("/images/<path:ref>/tag")
    async def tag_image(ref: str) -> Response:
        repo = request.args.get("repo") or ""
        if not repo:
            raise InvalidArgument("tag needs repo=NAME")
        tag = request.args.get("tag") or "latest"
        await bus.request(TagImage(source=ref, target=f"{repo}:{tag}"))
        return Response("", status=201)

    @app.delete("/images/<path:ref>")
    async def remove_image(ref: str) -> Response:
        removed = await bus.request(RemoveImage(ref=ref, force=flag(request.args, "force")))
        rows: list[dict[str, str]] = []
        for item in removed:
            if item.untagged:
                rows.append({"Untagged": item.untagged})
            if item.deleted:
                rows.append({"Deleted": item.deleted})
        return reply(rows)

    @app.get("/images/<path:ref>/history")
    async def image_history(ref: str) -> Response:
        image = await bus.request(InspectImage(ref=ref))
        entries = await bus.request(ShowImageHistory(ref=image.id))
        return reply(
            [
                {
                    "Id": entry.id or "<missing>",
                    "Created": unix_time(entry.created),
                    "CreatedBy": entry.created_by,
                    "Tags": image.repo_tags if entry.id else None,
                    "Size": entry.size,
                    "Comment": entry.comment,
                }
                for entry in entries
            ]
        )

    @app.post("/commit")
    async def commit() -> Response:
        args = request.args
        if await request.get_json(force=True, silent=True):
            raise InvalidArgument(
                "Carte does not support a container config in the commit body; use changes= "
                "(docker commit --change)"
            )
        repo, tag = args.get("repo") or "", args.get("tag") or ""
        result = await bus.request(
            CommitContainer(
                container=args.get("container") or "",
                reference=f"{repo}:{tag or 'latest'}" if repo else "",
                author=args.get("author") or "",
                message=args.get("comment") or "",
                changes=args.getlist("changes"),
                pause=flag(args, "pause", default=True),
            )
        )
        return reply({"Id": result.id}, 201)

    @app.post("/images/create")
    async def pull_image() -> Response:
        args = request.args
        if args.get("fromSrc"):
            raise InvalidArgument(
                "Carte does not support docker import over this API; use carte import FILE NAME"
            )
        image = args.get("fromImage") or ""
        if not image:
            raise InvalidArgument("images/create needs fromImage=NAME")
        tag = args.get("tag") or ""
        reference = (
            f"{image}@{tag}" if tag.startswith("sha256:") else (f"{image}:{tag}" if tag else image)
        )
        result = await bus.request(PullImage(reference=reference))
        lines = [
            {"status": f"Pulling from {image}", "id": tag or "latest"},
            {"status": f"Digest: {result.manifest_digest}"},
            {"status": f"Status: Downloaded newer image for {result.name or reference}"},
        ]
        return Response(
            "".join(json.dumps(line) + "\r\n" for line in lines), content_type="application/json"
        )

    # --- networks -----------------------------------------------------------------------------

    @app.get("/networks")
    async def list_networks() -> Response:
        return reply([network_shape(n) for n in await bus.request(ListNetworks())])

    @app.get("/networks/<name>")
    async def inspect_network(name: str) -> Response:
        network = await bus.request(InspectNetwork(name=name))
        return reply(network_shape(network))

    @app.post("/networks/create")
    async def create_network() -> Response:
        body = await request.get_json(force=True, silent=True)
        if not isinstance(body, dict) or not body.get("Name"):
            raise InvalidArgument("network create needs a JSON body with Name")
        driver = body.get("Driver") or "bridge"
        if driver != "bridge":
            raise InvalidArgument(
                f"Carte does not support the {driver!r} network driver; use bridge"
            )
        # Attachable is let through: a bridge network takes any container, as Docker's does
        for key in ("EnableIPv6", "Ingress", "ConfigOnly", "Options"):
            if body.get(key):
                raise InvalidArgument(f"Carte does not support network {key} (got {body[key]!r})")
        pools = (body.get("IPAM") or {}).get("Config") or []
        if len(pools) > 1:
            raise InvalidArgument("Carte networks take one subnet (IPAM.Config has several)")
        pool = pools[0] if pools else {}
        network = await bus.request(
            CreateNetwork(
                name=body["Name"],
                subnet=pool.get("Subnet") or "",
                gateway=pool.get("Gateway") or "",
                internal=bool(body.get("Internal")),
                labels=dict(body.get("Labels") or {}),
            )
        )
        return reply({"Id": network.id, "Warning": ""}, 201)

    @app.post("/networks/<name>/connect")
    async def connect_network(name: str) -> Response:
        body = await request.get_json(force=True, silent=True) or {}
        endpoint = body.get("EndpointConfig") or {}
        aliases = [str(a) for a in endpoint.get("Aliases") or []]
        ip = str((endpoint.get("IPAMConfig") or {}).get("IPv4Address") or "")
        details = await bus.request(InspectContainer(ref=str(body.get("Container") or "")))
        network = await bus.request(InspectNetwork(name=name))
        if network.name in (details.config.network, _docker_name(details.config.network)):
            if not details.state.running:
                return Response("", status=200)  # its own network: joined at start
        await bus.request(
            ConnectNetwork(network=network.name, container=details.id, aliases=aliases, ip=ip)
        )
        return Response("", status=200)

    @app.post("/networks/<name>/disconnect")
    async def disconnect_network(name: str) -> Response:
        body = await request.get_json(force=True, silent=True) or {}
        details = await bus.request(InspectContainer(ref=str(body.get("Container") or "")))
        network = await bus.request(InspectNetwork(name=name))
        if not details.state.running:
            raise InvalidArgument(
                f"Carte disconnects networks from running containers only; {details.name} is "
                f"{details.state.status}"
            )
        await bus.request(DisconnectNetwork(network=network.name, container=details.id))
        return Response("", status=200)

    @app.delete("/networks/<name>")
    async def remove_network(name: str) -> Response:
        await bus.request(RemoveNetwork(name=name))
        return Response("", status=204)

    # --- volumes ------------------------------------------------------------------------------

    @app.get("/volumes")
    async def list_volumes() -> Response:
        volumes = await bus.request(ListVolumes(filters=filters(request.args)))
        return reply({"Volumes": [volume_shape(v) for v in volumes], "Warnings": []})

    @app.get("/volumes/<name>")
    async def inspect_volume(name: str) -> Response:
        return reply(volume_shape(await bus.request(InspectVolume(name=name))))

    @app.post("/volumes/create")
    async def create_volume() -> Response:
        body = await request.get_json(force=True, silent=True) or {}
        driver = body.get("Driver") or "local"
        if driver != "local":
            raise InvalidArgument(f"Carte does not support the {driver!r} volume driver; use local")
        volume = await bus.request(
            CreateVolume(
                name=body.get("Name") or "",
                labels=dict(body.get("Labels") or {}),
                options={str(k): str(v) for k, v in (body.get("DriverOpts") or {}).items()},
            )
        )
        return reply(volume_shape(volume), 201)

    @app.delete("/volumes/<name>")
    async def remove_volume(name: str) -> Response:
        await bus.request(RemoveVolume(name=name, force=flag(request.args, "force")))
        return Response("", status=204)


def _docker_name(network: str) -> str:
    return "bridge" if network == "default" else network
