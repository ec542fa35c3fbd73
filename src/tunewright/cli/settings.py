"""The CLI's settings: the config file and flags, with the local stack's credentials filled in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tunewright.cli.stack import StackSettings, with_local_credentials
from tunewright.core.settings import SettingsError, load_settings


def cli_settings(config: Path | None, data_dir: Path | None, nats_url: str | None) -> StackSettings:
    """``--config`` / ``--data-dir`` / ``--nats-url`` as settings; a bad file is a click error."""
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if nats_url is not None:
        overrides["nats"] = {"url": nats_url}
        overrides["stack"] = {"embedded_nats": False}
    try:
        return with_local_credentials(load_settings(StackSettings, config, **overrides))
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
