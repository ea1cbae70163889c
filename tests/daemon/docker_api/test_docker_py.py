"""docker-py (the `docker` package from PyPI), unmodified, against Carte's Docker API socket."""

from __future__ import annotations

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
