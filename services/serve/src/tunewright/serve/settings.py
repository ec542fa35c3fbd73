"""Settings of the serve service (``TW_*`` env vars, YAML via ``--config`` or ``$TW_CONFIG``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, model_validator

from tunewright.core.settings import SettingsSection, TunewrightSettings, is_loopback


class HttpSection(SettingsSection):
    host: str = Field(
        default="127.0.0.1",
        description="Interface of the OpenAI-compatible HTTP API; loopback by default.",
    )
    port: int = Field(default=8000, ge=0, le=65535, description="HTTP port; 0 picks a free one.")
    api_key: SecretStr | None = Field(
        default=None,
        description="Bearer token HTTP clients send (the OpenAI client's api_key). "
        "grpc.auth_token is accepted too. `tunewright up` generates one.",
    )
    insecure_no_auth: bool = Field(
        default=False,
        description="Answer HTTP requests without a token. INSECURE: anyone who reaches the "
        "port can use every served model; for a laptop only.",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Larger request bodies are refused (413)."
    )
    tls_cert_file: str | None = Field(default=None, description="PEM certificate for HTTPS.")
    tls_key_file: str | None = Field(default=None, description="PEM key for HTTPS.")

    @model_validator(mode="after")
    def _tls_off_loopback(self) -> HttpSection:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("serve.http.tls_cert_file and tls_key_file go together")
        return self


class BackendSection(SettingsSection):
    name: str = Field(default="transformers", description="Serving backend plugin name.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Backend parameters (transformers: device, max_batch_size, max_adapters, "
        "max_adapter_bytes, max_bases, max_queued, max_prompt_tokens; vllm: see "
        "plugins/tunewright-vllm/README.md).",
    )


class LimitsSection(SettingsSection):
    default_max_tokens: int = Field(
        default=256, ge=1, description="Answer budget when a request sets none."
    )
    max_tokens: int = Field(
        default=1024, ge=1, description="Requests asking for more tokens are refused (400)."
    )
    max_messages: int = Field(default=128, ge=1, description="Chat turns per request.")
    max_prompt_chars: int = Field(
        default=64_000, ge=1, description="Characters of all turns together."
    )


class TrafficSection(SettingsSection):
    enabled: bool = Field(
        default=True,
        description="Log every answered request to the monitor (tw.traffic.interaction.logged).",
    )
    feedback_grace_s: float = Field(
        default=60.0,
        ge=0,
        description="An interaction waits this long for feedback (thumbs, escalated) before it "
        "is logged with it; feedback after that is refused (409).",
    )
    max_pending: int = Field(
        default=10_000, ge=1, description="Interactions waiting for feedback; older ones go first."
    )


class ServeSection(SettingsSection):
    registry_address: str = Field(
        default="127.0.0.1:50055",
        description="RegistryService gRPC address: aliases and model versions.",
    )
    http: HttpSection = Field(default_factory=HttpSection, description="HTTP API.")
    backend: BackendSection = Field(default_factory=BackendSection, description="Backend.")
    limits: LimitsSection = Field(default_factory=LimitsSection, description="Request limits.")
    traffic: TrafficSection = Field(default_factory=TrafficSection, description="Traffic log.")
    default_alias: str = Field(
        default="production",
        description="The alias a bare model name means (`support-bot` = support-bot:production).",
    )
    alias_refresh_s: float = Field(
        default=30.0,
        gt=0,
        description="Aliases in use are re-read this often, in case a promotion fact was missed.",
    )


class ServeSettings(TunewrightSettings):
    service_name: str = Field(default="serve", description="Name in logs, health and NATS.")
    serve: ServeSection = Field(default_factory=ServeSection, description="Serving.")

    @model_validator(mode="after")
    def _http_credentials(self) -> ServeSettings:
        http = self.serve.http
        has_key = http.api_key is not None or self.grpc.auth_token is not None
        if http.api_key is not None and not http.api_key.get_secret_value():
            raise ValueError("serve.http.api_key is empty; leave it unset or set a token")
        if not has_key and not http.insecure_no_auth:
            raise ValueError(
                "the serve HTTP API needs a credential: set serve.http.api_key (or "
                "grpc.auth_token), or serve.http.insecure_no_auth: true for a laptop"
            )
        if has_key and http.tls_cert_file is None and not is_loopback(http.host):
            raise ValueError(
                f"serve.http.host {http.host!r} is not loopback: bearer tokens need TLS "
                "(serve.http.tls_cert_file, tls_key_file) or bind 127.0.0.1"
            )
        return self
