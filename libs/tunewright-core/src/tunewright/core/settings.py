"""Service settings: one typed model, loaded from init kwargs, ``TW_*`` env vars and YAML.

Sources, highest priority first:

1. keyword arguments (``load_settings(IngestSettings, workspace="acme")``);
2. environment variables: prefix ``TW_``, nesting with ``__`` (``TW_GRPC__PORT=50051``);
3. a YAML file: the ``config_file`` given to :func:`load_settings`, else ``$TW_CONFIG``;
4. the defaults declared here.

Nested sections merge key by key across sources, so ``TW_GRPC__PORT`` overrides only the
port of a YAML ``grpc:`` section. Unknown keys are errors that name the key and where it came
from: in the YAML file at any depth, and in ``TW_*`` variables for every top-level key and
inside every known section. ``TW_<SECTION>__...`` variables for a section this class does not
have are left alone, because one environment may serve several services; for the same reason
a service puts its own fields in a section named after itself::

    class TrainerSection(SettingsSection):
        max_concurrent_jobs: int = Field(default=1, description="...")

    class TrainerSettings(TunewrightSettings):
        service_name: str = "trainer"
        trainer: TrainerSection = Field(default_factory=TrainerSection, description="...")

    settings = load_settings(TrainerSettings)          # TW_TRAINER__MAX_CONCURRENT_JOBS=2
"""

from __future__ import annotations

import contextvars
import difflib
import ipaddress
import os
import re
import types
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, Self, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tunewright.core.errors import FieldViolation, InvalidArgument

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_ALLOWED_URLS",
    "ENV_PREFIX",
    "ArtifactSettings",
    "GrpcSettings",
    "LogSettings",
    "NatsSettings",
    "OutboundSettings",
    "PluginSettings",
    "SettingsError",
    "SettingsSection",
    "TunewrightSettings",
    "is_loopback",
    "load_settings",
]

ENV_PREFIX: Final = "TW_"
CONFIG_ENV_VAR: Final = "TW_CONFIG"
# TW_* variables that are not settings: TW_CONFIG says where settings load from, and the
# plugin manager reads TW_PLUGINS_DISABLED itself
_NON_SETTINGS_ENV_VARS: Final = frozenset({CONFIG_ENV_VAR, "TW_PLUGINS_DISABLED"})
_SLUG: Final = r"^[a-z0-9][a-z0-9_-]{0,62}$"

# load_settings() hands its config file to the YAML source through this (sources are built
# inside BaseSettings.__init__, which has no parameter for it).
_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "tw_config_file", default=None
)

S = TypeVar("S", bound="TunewrightSettings")


class SettingsError(ValueError):
    """Settings could not be loaded; the message says which key, from which source."""


class SettingsSection(BaseModel):
    """Base of every nested settings section: unknown keys rejected, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NatsSettings(SettingsSection):
    url: str = Field(
        default="nats://127.0.0.1:4222",
        description="NATS server URL(s), comma-separated for a cluster.",
    )
    connect_timeout_s: float = Field(
        default=2.0, gt=0, description="Timeout of one connect attempt."
    )
    reconnect_time_wait_s: float = Field(
        default=2.0, ge=0, description="Pause between reconnect attempts."
    )
    max_reconnect_attempts: int = Field(
        default=-1,
        ge=-1,
        description="Reconnect attempts before giving up; -1 (default) retries forever, so a "
        "service outlives a NATS restart.",
    )
    startup_wait_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a starting service keeps trying to reach NATS (it may start first).",
    )
    user: str | None = Field(default=None, description="User name, with `password`.")
    password: SecretStr | None = Field(default=None, description="Password for `user`.")
    token: SecretStr | None = Field(default=None, description="Token authentication.")
    creds_file: Path | None = Field(default=None, description="NATS .creds file (JWT + nkey seed).")
    stream_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="Copies of every stream (and the processed-marks bucket) on a NATS cluster; "
        "3 survives the loss of one node. A single server needs 1.",
    )

    @model_validator(mode="after")
    def _user_and_password_together(self) -> Self:
        if (self.user is None) != (self.password is None):
            raise ValueError("nats.user and nats.password must be set together")
        return self


class GrpcSettings(SettingsSection):
    host: str = Field(
        default="127.0.0.1",
        description="Interface to bind; loopback by default, '0.0.0.0' or '[::]' to expose.",
    )
    port: int = Field(default=0, ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    tls_cert_file: Path | None = Field(
        default=None, description="PEM server certificate (chain); set with `tls_key_file`."
    )
    tls_key_file: Path | None = Field(
        default=None, description="PEM private key; set with `tls_cert_file`."
    )
    auth_token: SecretStr | None = Field(
        default=None,
        description="If set, every call except health and reflection must send "
        "'authorization: Bearer <token>'.",
    )
    identities_file: Path | None = Field(
        default=None,
        description="YAML of further callers: {identities: [{name, role, token_sha256}]}; "
        "roles viewer, submitter, reviewer, promoter, admin (tunewright identity add), and "
        "service for the platform's services (named after the service).",
    )
    client_token: SecretStr | None = Field(
        default=None,
        description="The token this process presents when it calls another service (a "
        "service's own identity, role service in the identities file); unset = auth_token.",
    )
    grace_period_s: float = Field(
        default=5.0, ge=0, description="On shutdown, how long in-flight calls may still run."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            given = "tls_cert_file" if self.tls_cert_file is not None else "tls_key_file"
            raise ValueError(
                f"grpc.tls_cert_file and grpc.tls_key_file must be set together; only {given} is"
            )
        if self.auth_token is not None and not self.auth_token.get_secret_value():
            raise ValueError("grpc.auth_token is empty; leave it unset to disable auth")
        if self.client_token is not None and not self.client_token.get_secret_value():
            raise ValueError("grpc.client_token is empty; leave it unset to send auth_token")
        if self.identities_file is not None and self.auth_token is None:
            raise ValueError("grpc.identities_file needs grpc.auth_token (the platform's own)")
        if self.auth_token is not None and not self.tls and not is_loopback(self.host):
            # anyone on that network could read the bearer token off the wire
            raise ValueError(
                f"grpc.auth_token needs TLS when grpc.host is not a loopback address "
                f"(host is {self.host!r}): set grpc.tls_cert_file and grpc.tls_key_file, "
                "or bind 127.0.0.1"
            )
        return self

    @property
    def outgoing_token(self) -> SecretStr | None:
        """What this process sends when it calls another service."""
        return self.client_token if self.client_token is not None else self.auth_token

    @property
    def address(self) -> str:
        """``host:port`` for binding (IPv6 hosts get their brackets)."""
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1`` (with or without brackets)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


class LogSettings(SettingsSection):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Root log level."
    )
    # a field literally named `json` would shadow BaseModel.json(); the key stays `json`
    json_format: bool = Field(
        default=True, alias="json", description="One JSON object per line (false: human-readable)."
    )


class PluginSettings(SettingsSection):
    disabled: list[str] = Field(
        default_factory=list, description="Plugin names not to load (entry-point names)."
    )


class ArtifactSettings(SettingsSection):
    backend: Literal["local", "nats"] = Field(
        default="local", description="'local' directory or the NATS object store."
    )
    root: Path | None = Field(
        default=None, description="Directory of the local store; default <data_dir>/artifacts."
    )


#: where a job may send data unless the operator says otherwise: this host only
DEFAULT_ALLOWED_URLS: Final = (
    "http://127.0.0.1:*",
    "https://127.0.0.1:*",
    "http://localhost:*",
    "https://localhost:*",
    "http://[::1]:*",
    "https://[::1]:*",
)
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_ANY_PORT: Final = -1
# RFC 3986 characters only: no spaces, backslashes or controls that URL parsers disagree on
_URL_CHARS: Final = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")
_URL_SETTING: Final = "outbound.allowed_urls (TW_OUTBOUND__ALLOWED_URLS, a JSON list)"
_PATH_SETTING: Final = "outbound.allowed_paths (TW_OUTBOUND__ALLOWED_PATHS, a JSON list)"
#: scheme, host, port (None: not given), path of a URL
_Url = tuple[str, str, int | None, str]


class OutboundSettings(SettingsSection):
    """Where job specs may send data or write files: the operator's allow-lists.

    A job names destinations in plugin params (a generator's ``base_url``, an MLflow
    ``tracking_uri``, a TensorBoard ``logdir``, a tracker file's ``path``); jobs come from
    callers, these lists from the operator. A plugin checks such params with
    :meth:`check_url` and :meth:`check_path` before it does anything (the service passes
    ``outbound=settings.outbound`` to its factory), so a spec naming anything else is refused
    with INVALID_ARGUMENT naming the field and the setting to change.
    """

    allowed_urls: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_URLS),
        description="URL prefixes a job may send data to, 'scheme://host[:port][/path]': "
        "same scheme and host ('*.example.com' for its subdomains), the same port (none "
        "given: the scheme's default; ':*' any), the path at or under the prefix's. Default: "
        "this host only (http(s) on 127.0.0.1, localhost, [::1], any port); e.g. "
        "['http://vllm:8000/v1', 'https://api.openai.com/v1']. Setting it replaces the default.",
    )
    allowed_paths: list[Path] = Field(
        default_factory=list,
        description="Absolute folders a job may write files under (a TensorBoard logdir, a "
        "tracker file), besides the folder the service gives the plugin (under data_dir). "
        "Paths are resolved first: '..' and symlinks cannot leave them.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        for i, entry in enumerate(self.allowed_urls):
            try:
                _url_rule(entry)
            except ValueError as exc:
                raise ValueError(f"outbound.allowed_urls[{i}]: {exc}") from None
        for i, path in enumerate(self.allowed_paths):
            if not path.is_absolute():
                raise ValueError(f"outbound.allowed_paths[{i}] must be an absolute path")
        return self

    @classmethod
    def given(cls, value: object) -> OutboundSettings:
        """The policy a factory got as ``outbound=``: the service's, or the defaults when it
        passed none. Anything else came from a job's params (JSON cannot make an instance of
        this class) and is refused: a job may not choose its own allow-list."""
        if value is None:
            return cls()
        if not isinstance(value, cls):
            raise InvalidArgument(
                "params may not carry outbound: allowed destinations are the operator's "
                f"settings {_URL_SETTING} and {_PATH_SETTING}",
                reason="OUTBOUND_IN_PARAMS",
                field_violations=[FieldViolation("params.outbound", "not allowed in a job")],
            )
        return value

    def check_url(self, url: str, *, field: str) -> str:
        """``url`` when an ``allowed_urls`` entry covers it, else :class:`InvalidArgument`
        naming ``field`` (``params.base_url``) and the setting. The message shows scheme,
        host and port only (a URL may carry credentials)."""
        try:
            target = _url_parts(url)
        except ValueError as exc:
            raise _refused(field, f"not an allowed URL: {exc}", _URL_SETTING) from None
        if not any(_covers(_url_rule(entry), target) for entry in self.allowed_urls):
            scheme, host, port, _ = target
            shown = f"{scheme}://{f'[{host}]' if ':' in host else host}"
            shown += f":{port}" if port is not None else ""
            raise _refused(field, f"{shown} is not an allowed destination", _URL_SETTING)
        return url

    def check_path(self, path: str | Path, *, field: str, root: Path) -> Path:
        """``path`` resolved (a relative one against ``root``) when it lies in ``root`` or
        in an ``allowed_paths`` folder, else :class:`InvalidArgument` naming ``field``."""
        text = str(path)
        if not text or "\x00" in text:
            raise _refused(field, "not a path", _PATH_SETTING)
        candidate = Path(text)
        resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
        roots = [root.resolve(), *(p.resolve() for p in self.allowed_paths)]
        if not any(resolved.is_relative_to(r) for r in roots):
            raise _refused(
                field, "is outside the service's folder and outbound.allowed_paths", _PATH_SETTING
            )
        return resolved


def _refused(field: str, what: str, setting: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field}: {what}; the operator allows destinations with {setting}",
        reason="DESTINATION_NOT_ALLOWED",
        field_violations=[FieldViolation(field, f"{what}; see {setting}")],
    )


def _url_parts(url: str) -> _Url:
    """(scheme, host, port or None, path) of an absolute URL; ValueError when it is not one,
    or when it has a '.' or '..' path segment."""
    if not _URL_CHARS.match(url):
        raise ValueError("characters outside RFC 3986")
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname  # lower case, brackets and user info gone
    if not parts.scheme or not host:
        raise ValueError("needs scheme://host")
    if "%" in host:
        raise ValueError("percent-escapes in the host are not allowed")
    port = parts.port  # ValueError when it is not a number in range
    path = urllib.parse.unquote(parts.path)
    if any(segment in (".", "..") for segment in path.split("/")):
        raise ValueError("'.' and '..' path segments are not allowed")
    return parts.scheme.lower(), host, port, path


def _url_rule(entry: str) -> _Url:
    """An ``allowed_urls`` entry as (scheme, host, port: ``_ANY_PORT`` for ':*', path)."""
    parts = urllib.parse.urlsplit(entry)
    any_port = parts.netloc.endswith(":*")
    if any_port:
        entry = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc[:-2]))
    scheme, host, port, path = _url_parts(entry)
    if parts.username is not None or parts.query or parts.fragment:
        raise ValueError("an entry is scheme://host[:port][/path], without user, query, fragment")
    if "*" in host and (not host.startswith("*.") or "*" in host[2:]):
        raise ValueError("a wildcard host is '*.domain'")
    return scheme, host, _ANY_PORT if any_port else port, path.rstrip("/")


def _covers(rule: _Url, target: _Url) -> bool:
    scheme, host, port, path = rule
    t_scheme, t_host, t_port, t_path = target
    if scheme != t_scheme:
        return False
    if host.startswith("*."):
        if not t_host.endswith(host[1:]):
            return False
    elif host != t_host:
        return False
    if port != _ANY_PORT:
        default = _DEFAULT_PORTS.get(scheme)
        if (port if port is not None else default) != (t_port if t_port is not None else default):
            return False
    return not path or t_path == path or t_path.startswith(path + "/")


class TunewrightSettings(BaseSettings):
    """Settings every service shares; a service subclasses it to add its own section."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    service_name: str = Field(
        default="tunewright", pattern=_SLUG, description="Name in logs, health checks and NATS."
    )
    data_dir: Path = Field(
        default_factory=lambda: Path.cwd() / ".tunewright",
        description="Local state: JetStream store, SQLite, artifacts.",
    )
    workspace: str = Field(
        default="default",
        pattern=_SLUG,
        description="Tenant-like namespace for datasets, runs, models.",
    )
    nats: NatsSettings = Field(default_factory=NatsSettings, description="NATS connection.")
    grpc: GrpcSettings = Field(default_factory=GrpcSettings, description="gRPC server.")
    log: LogSettings = Field(default_factory=LogSettings, description="Logging.")
    plugins: PluginSettings = Field(default_factory=PluginSettings, description="Plugins.")
    artifacts: ArtifactSettings = Field(
        default_factory=ArtifactSettings, description="Artifact store."
    )
    outbound: OutboundSettings = Field(
        default_factory=OutboundSettings,
        description="Where job specs may send data and write files (operator allow-lists).",
    )

    @property
    def artifacts_root(self) -> Path:
        """Where the local artifact store lives."""
        return self.artifacts.root or self.data_dir / "artifacts"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        _check_env_keys(settings_cls, os.environ)
        config_file = _config_file.get()
        if config_file is None and os.environ.get(CONFIG_ENV_VAR):
            config_file = Path(os.environ[CONFIG_ENV_VAR])
        return init_settings, env_settings, _YamlFileSource(settings_cls, config_file)


def load_settings(cls: type[S], config_file: Path | None = None, **overrides: Any) -> S:
    """Build ``cls`` from ``overrides``, ``TW_*`` env vars, the YAML file and defaults.

    ``config_file`` wins over ``$TW_CONFIG``. Raises :class:`SettingsError` naming the key and
    the file (or variable) on unknown keys and invalid values.
    """
    if config_file is None and os.environ.get(CONFIG_ENV_VAR):
        config_file = Path(os.environ[CONFIG_ENV_VAR])
    token = _config_file.set(config_file)
    try:
        return cls(**overrides)
    except ValidationError as exc:
        where = f"config file {config_file}, " if config_file else ""
        raise SettingsError(
            f"invalid {cls.__name__} ({where}{ENV_PREFIX}* env vars, arguments): "
            f"{_describe_errors(exc)}"
        ) from None  # the ValidationError's text quotes the input values: secrets too
    finally:
        _config_file.reset(token)


def _describe_errors(exc: ValidationError) -> str:
    """Where and what, for each error, without the offending values (they may be secrets)."""
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    parts = []
    for error in errors:
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        parts.append(f"{location}: {error['msg']}")
    return f"{len(parts)} error{'s' if len(parts) != 1 else ''}: " + "; ".join(parts)


# --- unknown-key checks --------------------------------------------------------------------


def _input_name(name: str, field: FieldInfo) -> str:
    return field.alias or name


def _section_model(field: FieldInfo) -> type[BaseModel] | None:
    """The model class of a nested section field (``X`` or ``X | None``), else None."""
    annotation = field.annotation
    candidates: tuple[Any, ...] = (annotation,)
    if get_origin(annotation) in (Union, types.UnionType):
        candidates = get_args(annotation)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _keys(model: type[BaseModel]) -> dict[str, FieldInfo]:
    return {_input_name(name, field): field for name, field in model.model_fields.items()}


def _unknown(key: str, model: type[BaseModel], prefix: str) -> str:
    known = sorted(_keys(model))
    path = f"{prefix}{key}"
    hint = difflib.get_close_matches(key, known, n=1)
    did_you_mean = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
    section = f"'{prefix.rstrip('.')}'" if prefix else "the top level"
    return f"unknown setting '{path}'{did_you_mean}; known keys at {section}: {', '.join(known)}"


def _check_mapping_keys(data: Mapping[str, Any], model: type[BaseModel], prefix: str = "") -> None:
    fields = _keys(model)
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            raise SettingsError(_unknown(str(key), model, prefix))
        section = _section_model(field)
        if section is not None and isinstance(value, Mapping):
            _check_mapping_keys(value, section, f"{prefix}{key}.")


def _check_env_keys(settings_cls: type[BaseModel], environ: Mapping[str, str]) -> None:
    for var in environ:
        if not var.upper().startswith(ENV_PREFIX) or var.upper() in _NON_SETTINGS_ENV_VARS:
            continue
        segments = var[len(ENV_PREFIX) :].lower().split("__")
        fields = {k.lower(): f for k, f in _keys(settings_cls).items()}
        if segments[0] not in fields and len(segments) > 1:
            continue  # a section of another service's settings class
        model: type[BaseModel] = settings_cls
        for depth, segment in enumerate(segments):
            fields = {k.lower(): f for k, f in _keys(model).items()}
            prefix = ".".join(segments[:depth]) + "." if depth else ""
            field = fields.get(segment)
            if field is None:
                raise SettingsError(
                    f"environment variable {var}: {_unknown(segment, model, prefix)}"
                )
            section = _section_model(field)
            if section is None:
                if depth != len(segments) - 1:
                    raise SettingsError(
                        f"environment variable {var}: '{prefix}{segment}' is not a section"
                    )
                break
            model = section


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads one YAML file and rejects keys the settings class does not have."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole file at once

    def __call__(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"config file {self.path}: cannot read: {exc}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            # not str(exc): it quotes the offending line, which may hold a secret
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise SettingsError(
                f"config file {self.path}: invalid YAML{where}: {problem}"
            ) from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise SettingsError(
                f"config file {self.path}: expected a mapping at the top, got {type(data).__name__}"
            )
        try:
            _check_mapping_keys(data, self.settings_cls)
        except SettingsError as exc:
            raise SettingsError(f"config file {self.path}: {exc}") from None
        return data
