"""Settings: source precedence, nested env vars, and unknown keys failing loudly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel, Field, SecretStr, ValidationError

from tunewright.core.settings import (
    GrpcSettings,
    SettingsError,
    SettingsSection,
    TunewrightSettings,
    load_settings,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TW_* variables from the outer environment; cwd is a temp dir."""
    for var in list(os.environ):
        if var.upper().startswith("TW_"):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tunewright.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_local_and_loopback(tmp_path: Path) -> None:
    s = load_settings(TunewrightSettings)
    assert s.grpc.host == "127.0.0.1"
    assert s.grpc.port == 0
    assert s.nats.url == "nats://127.0.0.1:4222"
    assert s.data_dir == tmp_path / ".tunewright"
    assert s.artifacts_root == tmp_path / ".tunewright" / "artifacts"
    assert s.workspace == "default"
    assert s.log.level == "INFO" and s.log.json_format is True


def test_yaml_file_is_read(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        "workspace: acme\ngrpc:\n  port: 50051\nlog:\n  json: false\nplugins:\n  disabled: [x]\n",
    )
    s = load_settings(TunewrightSettings, config_file=path)
    assert s.workspace == "acme"
    assert s.grpc.port == 50051
    assert s.log.json_format is False
    assert s.plugins.disabled == ["x"]


def test_yaml_typo_fails_naming_key_and_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "grpc:\n  prot: 50051\n")
    with pytest.raises(SettingsError) as info:
        load_settings(TunewrightSettings, config_file=path)
    message = str(info.value)
    assert str(path) in message
    assert "'grpc.prot'" in message
    assert "did you mean 'grpc.port'" in message


def test_yaml_top_level_typo_fails(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "worksapce: acme\n")
    with pytest.raises(SettingsError, match=r"unknown setting 'worksapce'"):
        load_settings(TunewrightSettings, config_file=path)


def test_yaml_bad_value_names_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "grpc:\n  port: not-a-port\n")
    with pytest.raises(SettingsError) as info:
        load_settings(TunewrightSettings, config_file=path)
    assert str(path) in str(info.value)
    assert "grpc.port" in str(info.value)


def test_missing_config_file_fails(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(TunewrightSettings, config_file=tmp_path / "absent.yaml")


def test_config_file_from_tw_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path, "workspace: from-env-file\n")
    monkeypatch.setenv("TW_CONFIG", str(path))
    assert load_settings(TunewrightSettings).workspace == "from-env-file"
    assert TunewrightSettings().workspace == "from-env-file"


def test_env_overrides_yaml_and_merges_sections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_yaml(tmp_path, "workspace: acme\ngrpc:\n  host: 0.0.0.0\n  port: 1\n")
    monkeypatch.setenv("TW_GRPC__PORT", "50051")
    monkeypatch.setenv("TW_WORKSPACE", "beta")
    s = load_settings(TunewrightSettings, config_file=path)
    assert s.grpc.port == 50051
    assert s.grpc.host == "0.0.0.0"  # the rest of the YAML section survives
    assert s.workspace == "beta"


def test_kwargs_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TW_WORKSPACE", "from-env")
    assert load_settings(TunewrightSettings, workspace="from-kwargs").workspace == "from-kwargs"


def test_nested_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TW_NATS__URL", "nats://10.0.0.1:4222")
    monkeypatch.setenv("TW_GRPC__AUTH_TOKEN", "s3cret-token")
    monkeypatch.setenv("TW_LOG__JSON", "false")
    monkeypatch.setenv("TW_PLUGINS__DISABLED", '["a", "b"]')
    s = load_settings(TunewrightSettings)
    assert s.nats.url == "nats://10.0.0.1:4222"
    assert isinstance(s.grpc.auth_token, SecretStr)
    assert s.grpc.auth_token.get_secret_value() == "s3cret-token"
    assert "s3cret-token" not in repr(s)
    assert s.log.json_format is False
    assert s.plugins.disabled == ["a", "b"]


def test_unknown_env_keys_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TW_GRPC__PROT", "1")
    with pytest.raises(SettingsError, match=r"TW_GRPC__PROT.*'grpc.prot'.*'grpc.port'"):
        load_settings(TunewrightSettings)
    monkeypatch.delenv("TW_GRPC__PROT")
    monkeypatch.setenv("TW_WORKSPCE", "x")
    with pytest.raises(SettingsError, match=r"TW_WORKSPCE"):
        load_settings(TunewrightSettings)


def test_other_services_sections_in_env_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # one environment may serve several services (tunewright up): not this class's section
    monkeypatch.setenv("TW_TRAINER__MAX_CONCURRENT_JOBS", "2")
    assert load_settings(TunewrightSettings).workspace == "default"


def test_service_subclass_adds_a_section(monkeypatch: pytest.MonkeyPatch) -> None:
    class TrainerSection(SettingsSection):
        max_concurrent_jobs: int = Field(default=1, description="Jobs run at once.")

    class TrainerSettings(TunewrightSettings):
        service_name: str = "trainer"
        trainer: TrainerSection = Field(default_factory=TrainerSection, description="Trainer.")

    monkeypatch.setenv("TW_TRAINER__MAX_CONCURRENT_JOBS", "2")
    s = load_settings(TrainerSettings)
    assert s.service_name == "trainer"
    assert s.trainer.max_concurrent_jobs == 2
    monkeypatch.setenv("TW_TRAINER__MAX_JOBS", "2")
    with pytest.raises(SettingsError, match=r"trainer\.max_jobs"):
        load_settings(TrainerSettings)


def test_tls_half_configured_fails(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"tls_cert_file and grpc\.tls_key_file"):
        GrpcSettings(tls_cert_file=tmp_path / "cert.pem")
    path = write_yaml(tmp_path, "grpc:\n  tls_key_file: /x/key.pem\n")
    with pytest.raises(SettingsError, match="only tls_key_file is"):
        load_settings(TunewrightSettings, config_file=path)
    both = GrpcSettings(tls_cert_file=tmp_path / "c.pem", tls_key_file=tmp_path / "k.pem")
    assert both.tls


def test_settings_are_frozen() -> None:
    s = load_settings(TunewrightSettings)
    with pytest.raises(ValidationError):
        s.workspace = "other"  # type: ignore[misc]


def test_every_field_is_documented() -> None:
    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            assert field.description, f"{prefix}{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")

    walk(TunewrightSettings, "")


def test_errors_never_show_input_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the password is valid, its companion is missing: the error must not echo the secret
    monkeypatch.setenv("TW_NATS__PASSWORD", "hunter2secret")
    monkeypatch.setenv("TW_GRPC__PORT", "hunter3secret")
    with pytest.raises(SettingsError) as info:
        load_settings(TunewrightSettings)
    message = str(info.value)
    assert "hunter2secret" not in message and "hunter3secret" not in message
    assert "nats: Value error, nats.user and nats.password must be set together" in message
    assert "grpc.port: Input should be a valid integer" in message
    assert "2 errors" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__

    path = write_yaml(tmp_path, "nats:\n  password: [hunter4secret\n")
    monkeypatch.delenv("TW_NATS__PASSWORD")
    monkeypatch.delenv("TW_GRPC__PORT")
    with pytest.raises(SettingsError, match="invalid YAML at line") as info:
        load_settings(TunewrightSettings, config_file=path)
    assert "hunter4secret" not in str(info.value)


def test_plugins_disabled_variable_is_not_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # read by the plugin manager itself, not by the settings class
    monkeypatch.setenv("TW_PLUGINS_DISABLED", "tw-example,other")
    assert load_settings(TunewrightSettings).plugins.disabled == []


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"])
def test_auth_token_without_tls_is_fine_on_loopback(host: str) -> None:
    assert GrpcSettings(host=host, auth_token=SecretStr("t")).auth_token is not None


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "10.0.0.5", "svc.example.com"])
def test_auth_token_without_tls_is_refused_on_a_network_interface(
    host: str, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError, match=r"grpc.auth_token needs TLS .*loopback"):
        GrpcSettings(host=host, auth_token=SecretStr("t"))
    with_tls = GrpcSettings(
        host=host,
        auth_token=SecretStr("t"),
        tls_cert_file=tmp_path / "c.pem",
        tls_key_file=tmp_path / "k.pem",
    )
    assert with_tls.tls
    assert GrpcSettings(host=host).auth_token is None  # no token, no secret to leak
