"""Relay settings: defaults, a TOML file, a secrets directory, ``SDDSF_RELAY_*``
environment variables (``*_FILE`` to read a value from a file) and command-line
flags. A value that is not what the setting takes is a ConfigError naming the
setting and its environment variable, never a silent default."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from livekit import free_port, relay_env, serve_command, write_key_file

from sddsf.errors import Code, ConfigError
from sddsf.relay.settings import RelaySettings, load_settings


@pytest.mark.parametrize(("name", "raw"), [
    ("trust_proxy_headers", "ture"),
    ("trust_proxy_headers", "2"),
    ("rate_ip_per_s", "nan"),
    ("rate_ip_per_s", "inf"),
    ("rate_ops_burst", "-5"),
    ("rate_device_per_s", "0"),
    ("max_batch_ops", "1.5"),
    ("port", "70000"),
    ("workers", "0"),
    ("log_format", "xml"),
])
def test_a_bad_environment_value_names_the_setting(name: str, raw: str) -> None:
    env_name = f"SDDSF_RELAY_{name.upper()}"
    with pytest.raises(ConfigError) as info:
        load_settings(env={env_name: raw})
    assert info.value.code is Code.CONFIG
    assert name in info.value.message and env_name in info.value.message, info.value.message


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("1", True), ("on", True),
                                            ("false", False), ("0", False), ("no", False)])
def test_boolean_spellings(raw: str, value: bool) -> None:
    assert load_settings(env={"SDDSF_RELAY_TRUST_PROXY_HEADERS": raw}).trust_proxy_headers \
        is value


def test_a_bad_toml_value_names_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[relay]\ntrust_proxy_headers = "ture"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(str(config), env={})
    assert "trust_proxy_headers" in info.value.message and str(config) in info.value.message
    config.write_text("[relay]\nrate_ip_per_s = nan\n")
    with pytest.raises(ConfigError, match="rate_ip_per_s"):
        load_settings(str(config), env={})
    config.write_text('[relay]\nport = "8800"\nrate_ip_per_s = 5\n')  # numbers as text: fine
    s = load_settings(str(config), env={})
    assert (s.port, s.rate_ip_per_s) == (8800, 5.0)


def test_precedence_file_then_secrets_then_env_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[relay]\nport = 8801\nmax_batch_ops = 7\nredis_url = "redis://a/0"\n')
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "SDDSF_RELAY_REDIS_URL").write_text("redis://from-secrets/0\n")
    (secrets / "sddsf_relay_max_batch_ops").write_text("9")
    s = load_settings(str(config), env={"SDDSF_RELAY_MAX_BATCH_OPS": "11"},
                      secrets_dir=str(secrets))
    assert (s.port, s.max_batch_ops, s.redis_url) == (8801, 11, "redis://from-secrets/0")
    s = load_settings(str(config), env={"SDDSF_RELAY_SECRETS_DIR": str(secrets)}, port=8802)
    assert (s.port, s.max_batch_ops, s.redis_url) == (8802, 9, "redis://from-secrets/0")


def test_file_variables_read_secrets_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "db-url"
    secret.write_text("postgresql://relay:s3cret@db.internal/sddsf\n")
    s = load_settings(env={"SDDSF_RELAY_DB_FILE": str(secret)})
    assert s.db == "postgresql://relay:s3cret@db.internal/sddsf"  # one trailing newline cut
    with pytest.raises(ConfigError, match="SDDSF_RELAY_DB_FILE"):
        load_settings(env={"SDDSF_RELAY_DB_FILE": str(secret),
                           "SDDSF_RELAY_DB": "sqlite:///x.db"})
    with pytest.raises(ConfigError, match="SDDSF_RELAY_REDIS_URL_FILE") as info:
        load_settings(env={"SDDSF_RELAY_REDIS_URL_FILE": str(tmp_path / "missing")})
    assert "missing" in info.value.message
    # key_file is a setting of its own (SDDSF_RELAY_KEY_FILE), not a *_FILE variable.
    assert load_settings(env={"SDDSF_RELAY_KEY_FILE": "/k"}).key_file == "/k"


def test_secret_values_are_not_echoed_in_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"SDDSF_RELAY_REDIS_URL": "http://user:hunter2@host/0"})
    assert "hunter2" not in info.value.message
    with pytest.raises(ConfigError) as info:
        load_settings(env={"SDDSF_RELAY_DB": "mysql://user:hunter2@host/db"})
    assert "hunter2" not in info.value.message


def test_replace_validates_like_loading() -> None:
    base = RelaySettings(db="sqlite:////unused", key_file="/unused")
    assert base.replace(rate_ip_per_s=3.0).rate_ip_per_s == 3.0
    for bad in ({"rate_ip_per_s": float("nan")}, {"rate_ip_per_s": -1.0},
                {"trust_proxy_headers": "ture"}, {"workers": 0}):
        with pytest.raises(ConfigError):
            base.replace(**bad)


def test_serve_refuses_a_misspelt_boolean_before_listening(tmp_path: Path) -> None:
    key = write_key_file(tmp_path / "relay.key")
    done = subprocess.run(
        serve_command("--db", f"sqlite:///{tmp_path / 'relay.db'}", "--port", str(free_port())),
        env=relay_env({"SDDSF_RELAY_KEY_FILE": str(key),
                       "SDDSF_RELAY_TRUST_PROXY_HEADERS": "ture"}),
        cwd=tmp_path, capture_output=True, timeout=30, check=False)
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert "SDDSF_RELAY_TRUST_PROXY_HEADERS" in stderr and "[config]" in stderr, stderr
