"""carte.yaml: defaults, one-line errors with file and line, flag overrides, reload."""

from pathlib import Path

import msgspec
import pytest

from carte.engine import Config, ConfigError, apply_overrides, load_config, reload, reloaded
from carte.engine.config import DEFAULT_CONFIG_FILE


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "carte.yaml"
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert "Traceback" not in message
    return message


def test_the_shipped_file_holds_exactly_the_defaults() -> None:
    assert DEFAULT_CONFIG_FILE.exists()
    assert load_config(DEFAULT_CONFIG_FILE) == Config()
    shipped = DEFAULT_CONFIG_FILE.read_text()
    for section in msgspec.structs.fields(Config):  # every section is documented
        assert f"\n{section.name}:" in shipped


def test_defaults_match_the_documented_values() -> None:
    config = load_config(None)
    assert config.daemon.root == "/var/lib/carte"
    assert config.daemon.socket_path == Path("/run/carte/carte.sock")
    assert config.supervisor.backoff.delays() == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    assert (config.containers.restart.base, config.containers.restart.cap) == (10.0, 300.0)
    assert config.containers.restart.reset == 600.0


def test_an_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing set\n")) == Config()


def test_a_partial_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "daemon:\n  root: /srv/carte\nbus:\n  journal_size: 5\n"))
    assert config.daemon.root == "/srv/carte"
    assert config.daemon.run_root == "/run/carte"
    assert config.bus.journal_size == 5


def test_an_unknown_key_names_file_line_key_and_the_choices(tmp_path: Path) -> None:
    path = write(tmp_path, "daemon:\n  root: /x\n\n  handlrs: [api]\n")
    assert error_of(path) == (
        f'{path}:4: unknown key "handlrs" in "daemon"; expected one of root, run_root, '
        "socket, socket_group, log_level, shutdown_timeout"
    )


def test_an_unknown_section_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "daemon:\n  root: /x\nhandlrs:\n  disabled: []\n")
    message = error_of(path)
    assert message.startswith(f'{path}:3: unknown key "handlrs" in the top level; ')
    assert "handlers" in message


def test_a_nested_unknown_key_names_the_section_path(tmp_path: Path) -> None:
    path = write(tmp_path, "supervisor:\n  backoff:\n    initial: 1\n    maximum: 9\n")
    assert error_of(path).startswith(f'{path}:4: unknown key "maximum" in "supervisor.backoff"')


def test_a_wrong_type_names_line_key_expected_and_got(tmp_path: Path) -> None:
    path = write(tmp_path, "bus:\n  subscriber_buffer: 8\n  journal_size: lots\n")
    assert error_of(path) == (
        f'{path}:3: "bus.journal_size" must be an integer, got a string "lots"; fix the value'
    )


def test_a_value_out_of_range_names_the_bound(tmp_path: Path) -> None:
    path = write(tmp_path, "supervisor:\n  backoff:\n    initial: 0\n")
    assert error_of(path) == (
        f'{path}:3: "supervisor.backoff.initial" must be a number > 0.0, got an integer 0; '
        "fix the value"
    )


def test_a_wrong_type_inside_a_list_names_the_item(tmp_path: Path) -> None:
    path = write(tmp_path, "handlers:\n  disabled:\n    - webhook\n    - 7\n")
    assert error_of(path) == (
        f'{path}:4: "handlers.disabled[1]" must be a string, got an integer 7; fix the value'
    )


def test_a_bad_choice_lists_the_allowed_values(tmp_path: Path) -> None:
    path = write(tmp_path, "daemon:\n  log_level: loud\n")
    assert error_of(path) == (
        f'{path}:2: "daemon.log_level" must be one of debug, info, warning, error, '
        'got a string "loud"; fix the value'
    )


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "daemon:\n  root: /x\n  run_root: [unclosed\nbus: {}\n")
    message = error_of(path)
    assert message.startswith(f"{path}:4: malformed YAML: ")
    assert message.endswith("; fix the syntax")


def test_a_duplicate_key_is_malformed(tmp_path: Path) -> None:
    path = write(tmp_path, "daemon:\n  root: /a\n  root: /b\n")
    assert error_of(path).startswith(f'{path}:3: malformed YAML: found duplicate key "root"')


def test_a_non_mapping_document_is_explained(tmp_path: Path) -> None:
    path = write(tmp_path, "- daemon\n")
    assert error_of(path).startswith(f"{path}:1: expected a mapping of sections")


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.yaml") == (
        f"{tmp_path / 'nope.yaml'}: cannot read config file (No such file or directory); "
        "check the --config path"
    )


def test_handler_options_are_a_free_mapping(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "handlers:\n  options:\n    webhook:\n      url: http://127.0.0.1:9/x\n"
        "      events: [ContainerExited]\n",
    )
    options = load_config(path).handlers.options["webhook"]
    assert options == {"url": "http://127.0.0.1:9/x", "events": ["ContainerExited"]}


def test_flags_override_the_file_and_unset_flags_do_not() -> None:
    config = apply_overrides(
        Config(),
        {"daemon.root": Path("/tmp/r"), "daemon.log_level": "debug", "daemon.socket": None},
    )
    assert config.daemon.root == "/tmp/r"
    assert config.daemon.log_level == "debug"
    assert config.daemon.socket is None
    assert config.daemon.socket_path == Path("/run/carte/carte.sock")


def test_a_bad_flag_value_is_one_line_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        apply_overrides(Config(), {"daemon.log_level": "loud"})
    assert str(caught.value).startswith('command-line flag: "daemon.log_level" must be one of')
    with pytest.raises(ConfigError, match=r'override "daemon\.roots": unknown key "roots"'):
        apply_overrides(Config(), {"daemon.roots": "/x"})


def test_reload_splits_what_applies_live_from_what_needs_a_restart() -> None:
    old = Config()
    new = msgspec.convert(
        {
            "daemon": {"root": "/elsewhere", "log_level": "debug"},
            "bus": {"journal_size": 50, "subscriber_buffer": 8},
            "handlers": {"options": {"webhook": {"url": "x"}}, "disabled": ["dns"]},
        },
        Config,
    )
    applied, not_reloadable = reload(old, new)
    assert sorted(applied) == ["bus.journal_size", "daemon.log_level", "handlers.options.webhook"]
    assert sorted(not_reloadable) == ["bus.subscriber_buffer", "daemon.root", "handlers.disabled"]
    running = reloaded(old, new)
    assert running.daemon.log_level == "debug"
    assert running.bus.journal_size == 50
    assert running.handlers.options == {"webhook": {"url": "x"}}
    assert running.daemon.root == old.daemon.root  # needs a restart: kept
    assert running.bus.subscriber_buffer == old.bus.subscriber_buffer
    assert running.handlers.disabled == []
    assert reload(running, running) == ([], [])


def test_reload_can_remove_handler_options() -> None:
    old = msgspec.convert({"handlers": {"options": {"webhook": {"url": "x"}}}}, Config)
    applied, _ = reload(old, Config())
    assert applied == ["handlers.options.webhook"]
    assert reloaded(old, Config()).handlers.options == {}
