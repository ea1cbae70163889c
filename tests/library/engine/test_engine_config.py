"""carte.yaml: defaults, one-line errors with file and line, flag overrides, reload."""

from pathlib import Path

import msgspec
import pytest

from carte.engine import Config, ConfigError, apply_overrides, load_config, reload, reloaded
from carte.engine.config import (
    DEFAULT_CONFIG_FILE,
    HandlerOptions,
    OptionsSpec,
    handler_options,
)
from carte.handlers import BUILTIN
from carte.handlers.containers import ContainersOptions
from carte.plugins.webhook import WebhookHandler

BUILTIN_SPECS = [handler.options_spec() for handler in (*BUILTIN, WebhookHandler)]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "carte.yaml"
    path.write_text(text)
    return path


def error_of(path: Path, handlers: list[OptionsSpec] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, handlers)
    message = str(caught.value)
    assert "\n" not in message
    assert "Traceback" not in message
    return message


def test_the_shipped_file_holds_exactly_the_defaults() -> None:
    assert DEFAULT_CONFIG_FILE.exists()
    config = load_config(DEFAULT_CONFIG_FILE, BUILTIN_SPECS)
    assert msgspec.structs.replace(config, handlers=Config().handlers) == Config()
    for spec in BUILTIN_SPECS:  # every handler's options as its Options' defaults
        assert handler_options(config, spec) == spec.options()
    shipped = DEFAULT_CONFIG_FILE.read_text()
    for section in msgspec.structs.fields(Config):  # every section is documented
        assert f"\n{section.name}:" in shipped
    for spec in BUILTIN_SPECS:
        assert not spec.section or f"\n{spec.section}:" in shipped


def test_defaults_match_the_documented_values() -> None:
    config = load_config(None)
    assert config.daemon.root == "/var/lib/carte"
    assert config.daemon.socket_path == Path("/run/carte/carte.sock")
    assert config.supervisor.backoff.delays() == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    restart = handler_options(config, OptionsSpec("restart", ContainersOptions)).restart
    assert (restart.base, restart.cap, restart.reset) == (10.0, 300.0, 600.0)


def test_an_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing set\n")) == Config()


def test_a_partial_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "daemon:\n  root: /srv/carte\nbus:\n  journal_size: 5\n"))
    assert config.daemon.root == "/srv/carte"
    assert config.daemon.run_root == "/run/carte"
    assert config.bus.journal_size == 5


# (carte.yaml, its one-line error after "PATH:"); each case the test it was on its own.
EXACT_ERRORS = [
    pytest.param(
        "daemon:\n  root: /x\n\n  handlrs: [api]\n",
        '4: unknown key "handlrs" in "daemon"; expected one of root, run_root, socket, '
        "socket_group, log_level, shutdown_timeout",
        id="an_unknown_key_names_file_line_key_and_the_choices",
    ),
    pytest.param(
        "bus:\n  subscriber_buffer: 8\n  journal_size: lots\n",
        '3: "bus.journal_size" must be an integer, got a string "lots"; fix the value',
        id="a_wrong_type_names_line_key_expected_and_got",
    ),
    pytest.param(
        "supervisor:\n  backoff:\n    initial: 0\n",
        '3: "supervisor.backoff.initial" must be a number > 0.0, got an integer 0; fix the value',
        id="a_value_out_of_range_names_the_bound",
    ),
    pytest.param(
        "handlers:\n  disabled:\n    - webhook\n    - 7\n",
        '4: "handlers.disabled[1]" must be a string, got an integer 7; fix the value',
        id="a_wrong_type_inside_a_list_names_the_item",
    ),
    pytest.param(
        "daemon:\n  log_level: loud\n",
        '2: "daemon.log_level" must be one of debug, info, warning, error, got a string "loud"; '
        "fix the value",
        id="a_bad_choice_lists_the_allowed_values",
    ),
]
# (carte.yaml, how its one-line error starts after "PATH:").
ERROR_STARTS = [
    pytest.param(
        "supervisor:\n  backoff:\n    initial: 1\n    maximum: 9\n",
        '4: unknown key "maximum" in "supervisor.backoff"',
        id="a_nested_unknown_key_names_the_section_path",
    ),
    pytest.param(
        "daemon:\n  root: /a\n  root: /b\n",
        '3: malformed YAML: found duplicate key "root"',
        id="a_duplicate_key_is_malformed",
    ),
    pytest.param(
        "- daemon\n", "1: expected a mapping of sections", id="a_non_mapping_document_is_explained"
    ),
]


@pytest.mark.parametrize(("text", "error"), EXACT_ERRORS)
def test_a_bad_file_is_one_line_naming_it(tmp_path: Path, text: str, error: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}:{error}"


@pytest.mark.parametrize(("text", "start"), ERROR_STARTS)
def test_a_bad_file_error_starts_with_its_line(tmp_path: Path, text: str, start: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path).startswith(f"{path}:{start}")


def test_an_unknown_section_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "daemon:\n  root: /x\nhandlrs:\n  disabled: []\n")
    message = error_of(path)
    assert message.startswith(f'{path}:3: unknown key "handlrs" in the top level; ')
    assert "handlers" in message


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "daemon:\n  root: /x\n  run_root: [unclosed\nbus: {}\n")
    message = error_of(path)
    assert message.startswith(f"{path}:4: malformed YAML: ")
    assert message.endswith("; fix the syntax")


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.yaml") == (
        f"{tmp_path / 'nope.yaml'}: cannot read config file (No such file or directory); "
        "check the --config path"
    )


def test_without_the_handlers_options_are_taken_as_written(tmp_path: Path) -> None:
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


# --- handlers' typed options ---------------------------------------------------------------


class HelloOptions(HandlerOptions, frozen=True, kw_only=True):
    greeting: str = "hello"
    times: int = 1


HELLO = OptionsSpec("hello", HelloOptions)


def test_a_handlers_options_decode_into_its_struct(tmp_path: Path) -> None:
    path = write(tmp_path, "handlers:\n  options:\n    hello:\n      times: 3\n")
    config = load_config(path, [HELLO])
    assert handler_options(config, HELLO) == HelloOptions(times=3)
    assert handler_options(load_config(None, [HELLO]), HELLO) == HelloOptions()


def test_an_unknown_option_names_file_line_handler_and_the_choices(tmp_path: Path) -> None:
    path = write(tmp_path, "handlers:\n  options:\n    hello:\n      times: 3\n      tmes: 4\n")
    assert error_of(path, [HELLO]) == (
        f'{path}:5: unknown key "tmes" in "handlers.options.hello"; expected one of greeting, times'
    )


def test_a_wrong_option_type_names_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "handlers:\n  options:\n    hello:\n      times: many\n")
    assert error_of(path, [HELLO]) == (
        f'{path}:4: "handlers.options.hello.times" must be an integer, got a string "many"; '
        "fix the value"
    )


def test_options_for_a_handler_that_is_not_installed_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "handlers:\n  options:\n    helo:\n      times: 3\n")
    message = error_of(path, [HELLO])
    assert message.startswith(f'{path}:3: "handlers.options.helo": no installed handler')
    assert "hello" in message


def test_a_builtin_section_maps_onto_its_handlers_options(tmp_path: Path) -> None:
    path = write(tmp_path, "containers:\n  stop_timeout: 3\n  restart:\n    cap: 60\n")
    config = load_config(path, BUILTIN_SPECS)
    for name in ("containers", "restart"):  # one section, read by both handlers
        spec = next(spec for spec in BUILTIN_SPECS if spec.name == name)
        options = handler_options(config, spec)
        assert (options.stop_timeout, options.restart.cap) == (3, 60.0)


def test_a_builtin_section_reports_its_own_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "bus: {}\nnetwork:\n  dns: true\n  poolz: []\n")
    message = error_of(path, BUILTIN_SPECS)
    assert message.startswith(f'{path}:4: unknown key "poolz" in "network"; expected one of ')
    assert "pools" in message
    path = write(tmp_path, "images:\n  insecure_registries: localhost:5000\n")
    assert error_of(path, BUILTIN_SPECS).startswith(
        f'{path}:2: "images.insecure_registries" must be a list'
    )


def test_options_given_twice_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "network:\n  dns: false\nhandlers:\n  options:\n    network: {}\n")
    assert error_of(path, BUILTIN_SPECS) == (
        f'{path}:5: options of handler "network" are given twice, in "network" and in '
        '"handlers.options.network"; keep one'
    )


def test_an_unknown_top_level_section_lists_the_handlers_sections(tmp_path: Path) -> None:
    path = write(tmp_path, "netwrk:\n  dns: false\n")
    message = error_of(path, BUILTIN_SPECS)
    assert message.startswith(f'{path}:1: unknown key "netwrk" in the top level; ')
    assert "network" in message and "store" in message
