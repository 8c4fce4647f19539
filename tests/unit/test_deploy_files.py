"""deploy/: the systemd unit and the Caddy reverse-proxy example parse, name
real settings with valid values (loaded by the relay's own settings loader),
are hardened, and agree with each other (the port the relay listens on is the
one Caddy proxies to; Caddy's address is one of the relay's trusted proxies)."""

from __future__ import annotations

import configparser
import ipaddress
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from sddsf.relay.settings import ENV_PREFIX, RelaySettings, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


class _Multi(dict[str, Any]):
    """Repeated keys (Environment=, ...) are kept, one value per line."""

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, list) and key in self:
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


@pytest.fixture(scope="module")
def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, dict_type=_Multi,  # type: ignore[arg-type]
                                          empty_lines_in_values=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "sddsf-relay.service").read_text())
    return parser


def unit_env(unit: configparser.RawConfigParser) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in unit["Service"]["Environment"].splitlines():
        for word in shlex.split(line):
            name, _, value = word.partition("=")
            env[name] = value
    return env


def unit_settings(unit: configparser.RawConfigParser) -> RelaySettings:
    env = unit_env(unit)
    for name in env:  # every variable is a setting's (or the key's)
        setting = name.removeprefix(ENV_PREFIX).lower()
        assert name.startswith(ENV_PREFIX) and (
            setting in RelaySettings.__dataclass_fields__ or name == "SDDSF_RELAY_KEY_HEX"), name
    return load_settings(env=env)  # the relay's own validation


def test_unit_runs_the_relay_with_valid_settings(unit: configparser.RawConfigParser) -> None:
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/sddsf") and argv[1:3] == ["relay", "serve"]
    s = unit_settings(unit)
    state = f"/var/lib/{service['StateDirectory']}/"
    assert s.db == f"sqlite:///{state}relay.db" and s.key_file.startswith(state)
    assert s.host == "127.0.0.1" and s.trust_proxy_headers
    assert int(service["TimeoutStopSec"]) > s.shutdown_timeout_s
    assert int(service["LimitNOFILE"]) >= s.max_connections + 50
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_unit_is_hardened(unit: configparser.RawConfigParser) -> None:
    service = unit["Service"]
    for key, value in {"DynamicUser": "yes", "NoNewPrivileges": "yes",
                       "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "PrivateDevices": "yes", "RestrictSUIDSGID": "yes",
                       "LimitCORE": "0", "UMask": "0077"}.items():
        assert service.get(key) == value, key
    assert service.get("CapabilityBoundingSet") == ""
    assert "@system-service" in service["SystemCallFilter"]
    assert "@resources" not in service["SystemCallFilter"]  # the CLI sets RLIMIT_CORE
    families = set(service["RestrictAddressFamilies"].split())
    assert families == {"AF_INET", "AF_INET6", "AF_UNIX"}


def caddy_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(header, body lines) of each top-level block; braces must balance."""
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    blocks: list[tuple[str, list[str]]] = []
    depth = 0
    for line in lines:
        if depth == 0:
            assert line.endswith("{"), f"a top-level line outside a block: {line!r}"
            blocks.append((line[:-1].strip(), []))
        else:
            blocks[-1][1].append(line)
        depth += line.count("{") - line.count("}")
        assert depth >= 0
    assert depth == 0, "unbalanced braces"
    return blocks


def test_caddyfile_terminates_tls_and_proxies_to_the_unit(
        unit: configparser.RawConfigParser) -> None:
    blocks = caddy_blocks((DEPLOY / "Caddyfile").read_text())
    assert len(blocks) == 1
    site, body = blocks[0]
    # A host name, not http:// or a bare port: Caddy serves it with automatic TLS.
    assert re.fullmatch(r"[a-z0-9.-]+\.[a-z]+", site), site
    text = "\n".join(body)
    assert "tls off" not in text and "auto_https off" not in text
    s = unit_settings(unit)
    upstream = re.search(r"^reverse_proxy (\S+):(\d+) \{$", text, flags=re.MULTILINE)
    assert upstream, text
    host, port = upstream.group(1), int(upstream.group(2))
    assert (host, port) == (s.host, s.port)
    # Caddy reaches a loopback upstream from loopback: that address must be a
    # trusted proxy, and the header it sets the one the relay reads.
    assert ipaddress.ip_address(host).is_loopback
    assert any(ipaddress.ip_address(host) in net for net in s.proxy_networks)
    assert "header_up X-Forwarded-For {remote_host}" in text
    size = re.search(r"^max_size (\d+)MB$", text, flags=re.MULTILINE)
    assert size and int(size.group(1)) * 1_000_000 >= s.max_request_bytes
    internal = re.search(r"^@internal path (.+)$", text, flags=re.MULTILINE)
    assert internal and "/metrics" in internal.group(1).split()
    assert "respond @internal 404" in text
