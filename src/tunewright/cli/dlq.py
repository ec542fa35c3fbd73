"""``tunewright dlq``: the dead-letter stream (TW_DLQ), listed and redriven.

``list`` shows each dead letter (its sequence, original subject, the consumer that gave up,
the reason, deliveries) without its payload, which may hold raw records. ``redrive``
publishes dead letters again on their original subject, once the cause is fixed, and removes
them from TW_DLQ; consumers that had already handled one skip it (see
:mod:`tunewright.core.dead_letters`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from nats.js import JetStreamContext
from rich.console import Console
from rich.table import Table

from tunewright.cli.settings import cli_settings as _settings
from tunewright.cli.stack import Stack, StackError, StackSettings, mask_url
from tunewright.core import subjects
from tunewright.core.bus import EventBus
from tunewright.core.dead_letters import DeadLetter, list_dead_letters, redrive

console = Console()
T = TypeVar("T")
_CONNECT_WAIT_S = 5.0


def _with_js(settings: StackSettings, work: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    try:
        url = Stack(settings, say=console.print).nats_url()
    except StackError as exc:
        raise click.ClickException(str(exc)) from None

    async def run() -> T:
        try:
            bus = await EventBus.from_settings(
                settings.nats.model_copy(update={"url": url}),
                name="tunewright-cli",
                wait_for_server_s=_CONNECT_WAIT_S,
            )
        except Exception as exc:  # reported, not raised: the URL may carry credentials
            raise click.ClickException(
                f"NATS {mask_url(url)} unreachable: {type(exc).__name__}"
            ) from None
        try:
            return await work(bus.js)
        finally:
            await bus.close()

    return asyncio.run(run())


def _row(letter: DeadLetter) -> dict[str, Any]:
    return {
        "seq": letter.seq,
        "subject": letter.original_subject,
        "consumer": letter.consumer,
        "reason": letter.reason,
        "deliveries": letter.deliveries,
        "redrives": letter.redrives,
        "msg_id": letter.msg_id,
        "dead_lettered_at": (
            letter.dead_lettered_at.isoformat() if letter.dead_lettered_at else None
        ),
        "bytes": letter.size_bytes,
    }


config_option = click.option(
    "--config", type=click.Path(path_type=Path, dir_okay=False), help="YAML settings file."
)
data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), help="State directory."
)
nats_option = click.option("--nats-url", help="NATS to use instead of the local stack's.")
subject_option = click.option(
    "--subject",
    help="Only messages first published on this subject (wildcards allowed: tw.trainer.>).",
)


@click.group()
def dlq() -> None:
    """Dead letters: messages a consumer gave up on (bad payload, deliveries exhausted)."""


@dlq.command("list")
@subject_option
@click.option("--json", "as_json_output", is_flag=True, help="Machine-readable output.")
@config_option
@data_dir_option
@nats_option
def list_command(
    subject: str | None,
    as_json_output: bool,
    config: Path | None,
    data_dir: Path | None,
    nats_url: str | None,
) -> None:
    """List dead letters, oldest first (never their payloads)."""
    subject = _checked(subject)
    settings = _settings(config, data_dir, nats_url)
    letters = _with_js(settings, lambda js: list_dead_letters(js, subject=subject))
    if as_json_output:
        click.echo(json.dumps([_row(x) for x in letters], indent=2))
        return
    if not letters:
        console.print("no dead letters")
        return
    table = Table(title=f"dead letters ({len(letters)})")
    for col in ("seq", "subject", "consumer", "deliveries", "redrives", "when", "reason"):
        table.add_column(col)
    for x in letters:
        when = x.dead_lettered_at.strftime("%Y-%m-%d %H:%M:%S") if x.dead_lettered_at else "-"
        table.add_row(
            str(x.seq),
            x.original_subject,
            x.consumer,
            str(x.deliveries),
            str(x.redrives),
            when,
            x.reason,
        )
    console.print(table)


@dlq.command("redrive")
@subject_option
@click.option("--seq", "seqs", type=int, multiple=True, help="Only this TW_DLQ sequence.")
@config_option
@data_dir_option
@nats_option
def redrive_command(
    subject: str | None,
    seqs: tuple[int, ...],
    config: Path | None,
    data_dir: Path | None,
    nats_url: str | None,
) -> None:
    """Publish dead letters again on their original subject and remove them from TW_DLQ.

    Fix the cause first: a message that fails again is dead-lettered again.
    """
    subject = _checked(subject)
    settings = _settings(config, data_dir, nats_url)
    try:
        done = _with_js(
            settings, lambda js: redrive(js, subject=subject, seqs=set(seqs) if seqs else None)
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for item in done:
        note = " (already there: a repeated redrive)" if item.duplicate else ""
        console.print(
            f"redriven {item.dead_letter.seq} -> {item.dead_letter.original_subject} "
            f"(msg {item.dead_letter.msg_id}){note}",
            highlight=False,
        )
    console.print(f"{len(done)} dead letter(s) redriven")


def _checked(subject: str | None) -> str | None:
    if subject is not None and not subject.startswith(subjects.PREFIX + "."):
        raise click.BadParameter(f"not a tunewright subject: {subject!r}", param_hint="--subject")
    return subject
