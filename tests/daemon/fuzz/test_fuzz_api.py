"""The HTTP API fuzzed from its own OpenAPI document (GET /v1/openapi.json of a real daemon):
schemathesis generates each operation's path parameters, query and JSON body from the
document, including bodies that break the schema (Hypothesis underneath), and every answer
must be a client error or a success, never a 5xx, and come within a timeout (no hang).

Left out, each for a reason: follow streams that live until the client leaves by design
(events, logs, attach, exec, rollout status), anything that reaches beyond loopback or joins
clusters (pull, push, registry login, builds that pull, cluster join/init/leave), and creating
networks with generated subnets (a bridge on a host's own LAN subnet would cut the machine off;
network create is exercised by the crash harness with the daemon's own pools)."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any
from urllib.parse import quote, urlencode

import schemathesis
from fuzz_settings import EXAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core import NotSet
from support.daemon import DaemonFactory, UnixHTTPConnection
from support.etcd import free_port

EXCLUDED = {
    "/v1/events", "/v1/containers/{ref}/logs", "/v1/containers/{ref}/attach",
    "/v1/containers/{ref}/exec", "/v1/images/pull", "/v1/images/push", "/v1/build",
    "/v1/build/context", "/v1/cluster/join", "/v1/cluster/leave", "/v1/cluster/heartbeat",
    "/v1/commands/PullImage", "/v1/commands/PushImage", "/v1/commands/CheckRegistryLogin",
    "/v1/commands/BuildImage", "/v1/commands/JoinCluster", "/v1/commands/InitCluster",
    "/v1/commands/LeaveCluster", "/v1/commands/CreateNetwork", "/v1/commands/ApplyStack",
    "/v1/commands/GetRollout",
}  # fmt: skip
REQUEST_TIMEOUT = 20.0
PER_OPERATION = max(3, EXAMPLES // 10)
"""Examples per operation: 6 by default (about 500 requests), CARTE_FUZZ_EXAMPLES=N for N/10."""


def send(daemon_socket: Any, case: Any) -> tuple[int, bytes]:
    path = case.path
    for name, value in (case.path_parameters or {}).items():
        path = path.replace("{" + name + "}", quote(str(value), safe=""))
    if case.query:
        path += "?" + urlencode(case.query, doseq=True)
    headers = {k: str(v) for k, v in (case.headers or {}).items() if k.isascii()}
    body = None
    if not isinstance(case.body, NotSet):
        raw = case.body  # negative cases may be raw bytes (a body that is not JSON)
        body = raw if isinstance(raw, bytes) else json.dumps(raw, default=repr).encode()
        headers["Content-Type"] = case.media_type or "application/json"
    connection = UnixHTTPConnection(daemon_socket, timeout=REQUEST_TIMEOUT)
    try:
        connection.request(case.method.upper(), path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(4096)
    except TimeoutError:
        raise AssertionError(f"{case.method} {path}: no answer in {REQUEST_TIMEOUT} s") from None
    finally:
        connection.close()


def test_no_operation_answers_5xx_or_hangs(daemons: DaemonFactory) -> None:
    # The dashboard is on, so its routes are fuzzed too (off, they answer 503 "the dashboard
    # is off; start the daemon with --ui", by design).
    ui = f'handlers: {{options: {{ui: {{enabled: true, listen: "127.0.0.1:{free_port()}"}}}}}}\n'
    daemon = daemons(config=ui)
    document = daemon.request("GET", "/v1/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    operations = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path not in EXCLUDED:
            operations.append(operation)
    assert len(operations) > 60, [o.path for o in operations]
    failures: list[str] = []
    answers: Counter[int] = Counter()
    for operation in operations:
        strategy = st.one_of(
            operation.as_strategy(),
            operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
        )

        @settings(
            max_examples=PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=os.environ.get("CARTE_FUZZ_RANDOM", "") == "",
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def check(case: Any) -> None:
            status, body = send(daemon.socket, case)
            answers[status // 100] += 1
            assert status < 500, f"{case.method} {case.formatted_path}: {status} {body[:300]!r}"

        try:
            check()
        except AssertionError as error:
            failures.append(f"{operation.method.upper()} {operation.path}: {error}"[:1500])
    assert daemon.process is not None and daemon.process.poll() is None, daemon.log()[-3000:]
    assert not failures, "\n\n".join(failures)
    assert answers[2] and answers[4], answers  # both accepted and refused requests were made
