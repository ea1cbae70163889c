"""carte.yaml's store section: SQLite by default, etcd with endpoints, one-line errors."""

from pathlib import Path

import pytest

from carte.engine import ConfigError, load_config


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "carte.yaml"
    path.write_text(text)
    return load_config(path).store


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message
    return message.replace(str(tmp_path) + "/", "")


def test_sqlite_is_the_default_and_etcd_takes_endpoints_and_tls(tmp_path: Path) -> None:
    assert load_config(None).store.backend == "sqlite"
    store = load_config(None).store
    assert (store.endpoints, store.prefix, store.tls.ca) == ([], "carte/", None)
    etcd = load(
        tmp_path,
        "store:\n  backend: etcd\n  endpoints: [https://10.0.0.1:2379, https://10.0.0.2:2379]\n"
        "  tls: {ca: /etc/carte/ca.pem, cert: /etc/carte/etcd.pem, key: /etc/carte/etcd.key}\n",
    )
    assert etcd.backend == "etcd"  # type: ignore[attr-defined]
    assert etcd.endpoints == ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]  # type: ignore[attr-defined]
    assert etcd.tls.key == "/etc/carte/etcd.key"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "daemon: {}\nstore:\n  backend: zookeeper\n",
            'carte.yaml:3: "store.backend" must be one of sqlite, etcd, got a string "zookeeper"; '
            "fix the value",
            id="unknown-backend",
        ),
        pytest.param(
            "store:\n  backend: etcd\n  endpoints: [127.0.0.1:2379]\n",
            'carte.yaml:3: "store.endpoints[0]" must be a string like http://HOST:PORT or '
            'https://HOST:PORT, got a string "127.0.0.1:2379"; fix the value',
            id="endpoint-without-scheme",
        ),
        pytest.param(
            "store:\n  backend: etcd\n",
            'carte.yaml:1: "store": backend "etcd" needs endpoints, e.g. endpoints: '
            '["http://127.0.0.1:2379"]; fix the section',
            id="etcd-without-endpoints",
        ),
        pytest.param(
            "store:\n  tls: {cert: /a.pem}\n",
            'carte.yaml:1: "store": tls.cert and tls.key go together; give both or neither; '
            "fix the section",
            id="cert-without-key",
        ),
    ],
)
def test_store_mistakes_are_one_line_with_file_line_and_fix(
    tmp_path: Path, text: str, message: str
) -> None:
    assert error(tmp_path, text) == message


def test_an_unknown_store_key_is_named_with_the_keys_expected(tmp_path: Path) -> None:
    assert error(tmp_path, "store:\n  endpoint: []\n").startswith(
        'carte.yaml:2: unknown key "endpoint" in "store"; expected one of backend, endpoints'
    )
