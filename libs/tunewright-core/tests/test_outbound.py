"""The operator's allow-lists of outbound destinations (``outbound:`` in the settings): which
URLs and paths a job spec may name, and how a refusal reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tunewright.core.errors import InvalidArgument
from tunewright.core.settings import (
    DEFAULT_ALLOWED_URLS,
    OutboundSettings,
    SettingsError,
    TunewrightSettings,
    load_settings,
)


def _refused(policy: OutboundSettings, url: str) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as err:
        policy.check_url(url, field="params.base_url")
    return err.value


def test_the_default_is_this_host_only() -> None:
    policy = OutboundSettings()
    assert policy.allowed_urls == list(DEFAULT_ALLOWED_URLS)
    for url in ("http://127.0.0.1:8000/v1", "https://localhost/x", "http://[::1]:11434/v1"):
        assert policy.check_url(url, field="f") == url
    for url in (
        "http://10.0.0.7:8000/v1",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://127.1/",  # other spellings of loopback are not on the list
        "http://2130706433/",
        "http://localhost.evil.example/",
        "http://localhost@evil.example/",  # user info: the host is evil.example
        "http://evil.example#@localhost/",
        "http://localhost\\@evil.example/",  # parsers disagree on backslashes: refused
        "http://local%68ost/",
        "ftp://localhost/",
        "localhost:8000",
        "",
    ):
        err = _refused(policy, url)
        assert err.reason == "DESTINATION_NOT_ALLOWED", url
        assert [v.field for v in err.field_violations] == ["params.base_url"]
        assert "outbound.allowed_urls" in err.message and "TW_OUTBOUND__ALLOWED_URLS" in err.message


def test_entries_match_scheme_host_port_and_path_prefix() -> None:
    policy = OutboundSettings(
        allowed_urls=[
            "http://vllm:8000/v1",
            "https://*.corp.example",
            "https://api.openai.com",
            "http://gpu-box:*/v1",
            "postgresql://db.internal:5432",
        ]
    )
    ok = [
        "http://vllm:8000/v1",
        "http://vllm:8000/v1/",
        "http://VLLM:8000/v1/chat/completions",
        "https://a.corp.example/x",
        "https://a.b.corp.example/",
        "https://api.openai.com/v1",
        "https://api.openai.com:443/v1",  # no port in the entry: the scheme's default
        "http://gpu-box:8000/v1",
        "http://gpu-box:11434/v1/",
        "postgresql://tw:pw@db.internal:5432/mlflow",
    ]
    for url in ok:
        policy.check_url(url, field="f")
    for url in (
        "http://vllm:8000/v10",  # a prefix is matched segment by segment
        "http://vllm:8000/",
        "http://vllm/v1",  # the entry names port 8000
        "https://vllm:8000/v1",  # and http
        "https://corp.example/",  # the wildcard covers subdomains, not the domain
        "https://evilcorp.example/",
        "https://api.openai.com:444/v1",
        "https://a.b.corp.example:8443/",
        "http://gpu-box:8000/v2",
        "postgresql://db.internal/mlflow",  # no default port for postgresql: 5432 is named
        "http://vllm:8000/v1/../admin",
        "http://vllm:8000/v1/%2e%2e/admin",
    ):
        _refused(policy, url)


def test_a_refusal_never_shows_credentials_or_the_path() -> None:
    err = _refused(OutboundSettings(), "https://user:s3cret@files.example:9000/drop?token=abc")
    assert err.message.startswith("params.base_url: https://files.example:9000 is not an allowed")
    assert "s3cret" not in err.message and "token" not in err.message


def test_bad_entries_fail_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    for entry in ("vllm:8000", "http://", "http://u:p@host", "http://h/?q=1", "http://a.*.b"):
        with pytest.raises(ValueError, match=r"outbound.allowed_urls\[0\]"):
            OutboundSettings(allowed_urls=[entry])
    with pytest.raises(ValueError, match="absolute"):
        OutboundSettings(allowed_paths=[Path("relative")])
    monkeypatch.setenv("TW_OUTBOUND__ALLOWED_URLS", '["http://vllm:8000/v1"]')
    monkeypatch.setenv("TW_OUTBOUND__ALLOWED_PATHS", '["/srv/tensorboard"]')
    settings = load_settings(TunewrightSettings)
    assert settings.outbound.allowed_urls == ["http://vllm:8000/v1"]
    assert settings.outbound.allowed_paths == [Path("/srv/tensorboard")]
    monkeypatch.setenv("TW_OUTBOUND__ALLOWED_URLS", '["nope"]')
    with pytest.raises(SettingsError, match="outbound"):
        load_settings(TunewrightSettings)


def test_paths_resolve_inside_the_root_or_an_allowed_folder(tmp_path: Path) -> None:
    root = tmp_path / "data" / "tracking"
    shared = tmp_path / "shared"
    root.mkdir(parents=True)
    shared.mkdir()
    policy = OutboundSettings(allowed_paths=[shared])
    assert policy.check_path("tb", field="params.logdir", root=root) == root / "tb"
    assert policy.check_path(root / "a" / ".." / "b", field="f", root=root) == root / "b"
    assert policy.check_path(shared / "x", field="f", root=root) == shared / "x"
    (root / "link").symlink_to(tmp_path)  # a symlink out of the root does not help
    for path in ("../escape", "/etc", str(tmp_path / "data"), "link/x", "", "a\x00b"):
        with pytest.raises(InvalidArgument) as err:
            policy.check_path(path, field="params.logdir", root=root)
        assert err.value.reason == "DESTINATION_NOT_ALLOWED"
        assert [v.field for v in err.value.field_violations] == ["params.logdir"]
        assert "outbound.allowed_paths" in err.value.message
    assert OutboundSettings().check_path(".", field="f", root=root) == root
    assert os.path.isdir(root)


def test_only_the_service_can_hand_a_policy_to_a_plugin() -> None:
    policy = OutboundSettings(allowed_urls=["http://vllm:8000"])
    assert OutboundSettings.given(policy) is policy
    assert OutboundSettings.given(None) == OutboundSettings()
    for forged in ({"allowed_urls": ["http://evil.example"]}, "http://evil.example", [1]):
        with pytest.raises(InvalidArgument) as err:
            OutboundSettings.given(forged)
        assert err.value.reason == "OUTBOUND_IN_PARAMS"
