"""docker-py (the `docker` package from PyPI), unmodified, against Carte's Docker API socket."""

from __future__ import annotations

import io
import tarfile
import time

import docker
import pytest

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.daemon]


def test_docker_py_run_wait_logs_remove(docker_host: str) -> None:
    client = docker.DockerClient(base_url=docker_host, version="auto")
    try:
        assert client.ping() is True
        assert client.version()["ApiVersion"] == "1.41"
        output = client.containers.run("busybox", ["sh", "-c", "echo hi"], remove=True)
        assert output == b"hi\n"
        container = client.containers.run(
            "busybox",
            ["sh", "-c", "echo out; echo err >&2; exit 3"],
            detach=True,
            labels={"flow": "py"},
            mem_limit="32m",
        )
        assert client.containers.get(container.id).name == container.name
        assert container.wait()["StatusCode"] == 3
        assert container.logs(stdout=True, stderr=False) == b"out\n"
        assert container.logs(stdout=False, stderr=True) == b"err\n"
        listed = client.containers.list(all=True, filters={"label": "flow=py"})
        assert [c.id for c in listed] == [container.id]
        container.reload()
        assert container.attrs["HostConfig"]["Memory"] == 32 << 20
        assert container.status == "exited"
        container.remove()
        assert client.containers.list(all=True, filters={"label": "flow=py"}) == []
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(container.id)
    finally:
        client.close()


def test_docker_py_exec_archive_stats_build_events(docker_host: str) -> None:
    client = docker.DockerClient(base_url=docker_host, version="auto")
    since = int(time.time()) - 1
    try:
        box = client.containers.run("busybox", ["sleep", "300"], detach=True, name="pybox")
        ran = box.exec_run(["sh", "-c", "echo out; echo err >&2; exit 2"], demux=True)
        assert (ran.exit_code, ran.output) == (2, (b"out\n", b"err\n"))
        # a short process's output can follow the upgrade's head in one read: docker-py
        # reads the head apart and lost it once in five runs while Carte answered late
        outputs = {box.exec_run("pwd", workdir="/tmp").output for _ in range(15)}
        assert outputs == {b"/tmp\n"}
        packed = io.BytesIO()
        with tarfile.open(fileobj=packed, mode="w") as archive:
            member = tarfile.TarInfo("hello.txt")
            member.size = 6
            archive.addfile(member, io.BytesIO(b"hello\n"))
        assert box.put_archive("/tmp", packed.getvalue()) is True
        chunks, stat = box.get_archive("/tmp/hello.txt")
        assert stat["name"] == "hello.txt" and stat["size"] == 6
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
            assert archive.extractfile("hello.txt").read() == b"hello\n"  # type: ignore[union-attr]
        stats = box.stats(stream=False)
        assert stats["memory_stats"]["usage"] > 0 and stats["pids_stats"]["current"] >= 1
        assert any("sleep" in row[-1] for row in box.top()["Processes"])
        dockerfile = io.BytesIO(b"FROM busybox\nRUN echo built > /built\n")
        image, log = client.images.build(fileobj=dockerfile, tag="pybuilt:1", rm=True)
        assert "pybuilt:1" in image.tags and any("stream" in line for line in log)
        assert client.containers.run("pybuilt:1", ["cat", "/built"], remove=True) == b"built\n"
        box.remove(force=True)
        events = client.events(since=since, until=int(time.time()) + 1, decode=True,
                               filters={"container": "pybox"})  # fmt: skip
        assert [e["Action"] for e in events][:2] == ["create", "start"]
        assert client.images.prune()["ImagesDeleted"] is None  # all tagged
        client.images.remove("pybuilt:1")
    finally:
        client.close()
