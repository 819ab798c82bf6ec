"""Settings precedence: defaults < TOML < DARI_* environment < flags."""

from pathlib import Path

import pytest

from dari.config import DEFAULTS, ConfigError, Settings, parse_hostport


def test_defaults_without_any_source() -> None:
    settings = Settings.load(environ={})
    assert settings.values == DEFAULTS
    assert settings.data_dir == Path("./dari-data")


def test_precedence_toml_then_env_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "dari.toml"
    toml.write_text('num.partitions = 3\n[log]\nretention.ms = 1000\nflush.policy = "always"\n')
    env = {"DARI_NUM_PARTITIONS": "5", "DARI_DATA_DIR": "/env/dir", "UNRELATED": "x"}
    settings = Settings.load(toml, {"data.dir": "/flag/dir", "kafka": None}, environ=env)
    assert settings["num.partitions"] == 5  # env beats TOML
    assert settings["log.retention.ms"] == 1000  # nested TOML tables flatten to dotted names
    assert settings["log.flush.policy"] == "always"
    assert settings.data_dir == Path("/flag/dir")  # flags beat env
    assert settings["kafka"] == DEFAULTS["kafka"]  # a flag left unset changes nothing


def test_config_file_from_environment(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('"auto.create.topics.enable" = false\n')
    settings = Settings.load(environ={"DARI_CONFIG": str(toml)})
    assert settings["auto.create.topics.enable"] is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"no.such.setting": "1"}, "unknown setting"),
        ({"num.partitions": "many"}, "expects a int"),
        ({"auto.create.topics.enable": "maybe"}, "expects a bool"),
        ({"log.flush.policy": "sometimes"}, "log.flush.policy"),
        ({"kafka": "localhost"}, "HOST:PORT"),
        ({"num.partitions": "0"}, "at least 1"),
    ],
)
def test_bad_settings_are_named(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(overrides=overrides, environ={})


def test_bad_toml_is_reported(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("num.partitions = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(toml, environ={})


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:9092") == ("127.0.0.1", 9092)
    assert parse_hostport("[::1]:0") == ("::1", 0)
    assert parse_hostport(":9092") == ("0.0.0.0", 9092)
