"""``tunewright``: the command-line entry point.

``up`` / ``down`` / ``status`` manage the embedded local stack (:mod:`tunewright.cli.stack`);
``run`` / ``runs`` / ``logs`` / ``cancel`` drive pipelines through the registry
(:mod:`tunewright.cli.pipelines`); ``export`` writes a model version as a merged checkpoint or
one LoRA adapter (:mod:`tunewright.cli.export`).
Settings come from ``--config FILE`` (YAML), ``TW_*`` variables and defaults, like every
service; ``--data-dir`` is a shortcut for ``TW_DATA_DIR``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunewright.cli.dlq import dlq
from tunewright.cli.export import ExportError
from tunewright.cli.export import export as export_model
from tunewright.cli.pipelines import (
    PipelineError,
    RegistryClient,
    RunSummary,
    parse_parameters,
)
from tunewright.cli.pipelines import upload as upload_file
from tunewright.cli.progress import ProgressFollower
from tunewright.cli.settings import cli_settings as _settings
from tunewright.cli.stack import (
    Probe,
    Stack,
    StackError,
    StackSettings,
    add_identity,
    as_json,
    mask_url,
)
from tunewright.core.bus import EventBus
from tunewright.core.errors import TunewrightError
from tunewright.core.logs import configure_logging
from tunewright.core.settings import NatsSettings, SettingsError, load_settings

console = Console()


def _probe(settings: StackSettings) -> Probe:
    try:
        return Probe.from_settings(settings.grpc)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None


def _stack(settings: StackSettings) -> Stack:
    try:
        return Stack(settings, say=console.print)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None


config_option = click.option(
    "--config", type=click.Path(path_type=Path, dir_okay=False), help="YAML settings file."
)
data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), help="State directory."
)


@click.group()
@click.version_option(package_name="tunewright")
def cli() -> None:
    """tunewright: turn open LLMs into domain specialists, on your own hardware."""
    # the CLI reports problems itself; library warnings (e.g. NATS retries) would be noise
    configure_logging(service="cli", level="ERROR", json=False)


@cli.command()
@config_option
@data_dir_option
@click.option("--nats-url", help="Use this NATS instead of starting the embedded one.")
@click.option(
    "--with-argilla",
    is_flag=True,
    help="Also start Argilla (human feedback UI; Redis too unless stack.argilla_redis_url) "
    "and point the synth service's argilla feedback backend at it.",
)
def up(
    config: Path | None, data_dir: Path | None, nats_url: str | None, with_argilla: bool
) -> None:
    """Start nats-server (unless one is configured) and the services. Idempotent."""
    stack = _stack(_settings(config, data_dir, nats_url))
    try:
        stack.up(with_argilla=with_argilla)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(
        "[green]stack is up[/green]: `tunewright status` shows it, `tunewright down` stops it"
    )


@cli.command()
@config_option
@data_dir_option
def down(config: Path | None, data_dir: Path | None) -> None:
    """Stop the services and the embedded nats-server that `up` started."""
    _stack(_settings(config, data_dir, None)).down()


@cli.command()
@config_option
@data_dir_option
@click.option("--json", "as_json_output", is_flag=True, help="Machine-readable output.")
def status(config: Path | None, data_dir: Path | None, as_json_output: bool) -> None:
    """Health of each service, NATS streams with message counts, consumers with pending counts.

    Exits 1 when a service is not SERVING or NATS is unreachable.
    """
    settings = _settings(config, data_dir, None)
    stack = _stack(settings)
    services = stack.service_statuses()
    connect_url = stack.nats_url()
    streams, consumers, nats_error = asyncio.run(_nats_status(settings.nats, connect_url))
    nats_url = mask_url(connect_url)  # what is shown: never a password
    healthy = nats_error is None and all(s.health == "SERVING" for s in services)
    if as_json_output:
        report = {
            "healthy": healthy,
            "nats": {"url": nats_url, "error": nats_error},
            "services": [as_json(s) for s in services],
            "streams": [as_json(s) for s in streams],
            "consumers": [as_json(c) for c in consumers],
        }
        click.echo(json.dumps(report, indent=2))
    else:
        _print_status(services, nats_url, streams, consumers, nats_error)
    sys.exit(0 if healthy else 1)


async def _nats_status(
    nats_settings: NatsSettings, url: str
) -> tuple[list[Any], list[Any], str | None]:
    try:
        bus = await EventBus.from_settings(
            nats_settings.model_copy(update={"url": url}),
            name="tunewright-cli",
            wait_for_server_s=2.0,
        )
    except Exception as exc:  # any connect failure is reported as "unreachable", not raised
        detail = mask_url(str(exc))  # the error may quote the URL
        return [], [], f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    try:
        return await bus.stream_infos(), await bus.consumer_infos(), None
    finally:
        await bus.close()


def _print_status(
    services: list[Any], nats_url: str, streams: list[Any], consumers: list[Any], err: str | None
) -> None:
    table = Table(title="services")
    for col in ("service", "port", "pid", "health", "gRPC services (reflection)"):
        table.add_column(col)
    for s in services:
        colour = "green" if s.health == "SERVING" else "red"
        table.add_row(
            s.name,
            str(s.port),
            str(s.pid or "-"),
            f"[{colour}]{s.health}[/{colour}]",
            ", ".join(n for n in s.reflected_services if n.startswith("tunewright.")),
        )
    console.print(table)
    if err is not None:
        console.print(f"[red]NATS {nats_url} unreachable[/red]: {err}")
        return
    streams_table = Table(title=f"NATS streams ({nats_url})")
    for col in ("stream", "messages", "bytes", "subjects"):
        streams_table.add_column(col)
    for st in streams:
        streams_table.add_row(st.name, str(st.messages), str(st.bytes), " ".join(st.subjects))
    console.print(streams_table)
    consumers_table = Table(title="consumers")
    for col in ("stream", "durable", "pending", "ack pending", "redelivered"):
        consumers_table.add_column(col)
    for c in consumers:
        consumers_table.add_row(
            c.stream, c.durable, str(c.num_pending), str(c.num_ack_pending), str(c.num_redelivered)
        )
    console.print(consumers_table)


# --- pipelines ---------------------------------------------------------------------------

registry_option = click.option(
    "--registry", help="Registry gRPC address (default: the local stack's registry port)."
)


def _client(config: Path | None, data_dir: Path | None, registry: str | None) -> RegistryClient:
    return RegistryClient(_settings(config, data_dir, None), registry)


def _follow(client: RegistryClient, run_id: str, out: Console = console) -> RunSummary:
    for reply in client.events(run_id):
        event = reply.event
        stamp = event.created_at.ToDatetime().strftime("%H:%M:%S")
        where = f"[bold]{reply.stage}[/bold] " if reply.stage else ""
        colour = {2: "yellow", 3: "red"}.get(event.level, "default")
        out.print(f"{stamp} {where}[{colour}]{event.message}[/{colour}]", highlight=False)
    return client.summary(run_id)


def _follow_with_progress(
    client: RegistryClient, run_id: str, settings: StackSettings
) -> RunSummary:
    """Follow the run's events, with progress bars for its jobs fed from NATS."""
    stack = Stack(settings, say=lambda _: None)
    nats = settings.nats.model_copy(update={"url": stack.nats_url()})
    bars = ProgressFollower.bars()
    follower = ProgressFollower(nats, bars)
    follower.jobs = client.stage_jobs(run_id)
    follower.start()
    try:
        with bars:
            summary = _follow(client, run_id, bars.console)
    finally:
        follower.stop()
    if follower.problem:
        console.print(f"(no live progress: NATS unreachable, {follower.problem})")
    return summary


def _artifact(settings: StackSettings, uri: str) -> bytes | None:
    """An artifact from the local stack's store (the CLI runs beside it); None elsewhere."""
    if not uri:
        return None
    from tunewright.core.artifacts import ArtifactRef, LocalArtifactStore

    try:
        store = LocalArtifactStore(settings.artifacts_root)
        return asyncio.run(store.get_bytes(ArtifactRef.from_uri(uri)))
    except Exception:  # another host's store, or gone: the report says where it lives instead
        return None


def _print_report(
    client: RegistryClient, run_id: str, settings: StackSettings, report_dir: Path | None
) -> None:
    """Curation counts and PII audit, metrics with CIs, the gate's verdict, report files."""
    run = client.run(run_id)
    outputs = {s.name: (s.kind, dict(s.outputs)) for s in run.stages}
    for name, (kind, out) in outputs.items():
        if kind == "ingest" and "dataset_version_id" in out:
            dv = client.dataset_version(out["dataset_version_id"])
            c = dv.counts
            console.print(
                f"[bold]curation[/bold] ({name}): {c.total} rows -> {c.accepted} accepted "
                f"({c.train} train / {c.eval} eval), {c.quarantined} quarantined, "
                f"{c.duplicates} duplicates, {c.filtered} filtered"
            )
            audit = _artifact(settings, dv.pii_audit.uri)
            if audit:
                data = json.loads(audit)
                entities = data.get("spans_by_entity", {})
                if isinstance(entities, dict) and entities:
                    shown = ", ".join(f"{k} {v}" for k, v in sorted(entities.items()))
                    console.print(f"[bold]PII scrubbed[/bold]: {shown}")
            if dv.canary_recall:
                shown = ", ".join(f"{k} {v:.2f}" for k, v in sorted(dv.canary_recall.items()))
                console.print(f"[bold]PII canary recall[/bold]: {shown}", highlight=False)
        if kind == "feedback" and "dataset_version_id" in out:
            dv = client.dataset_version(out["dataset_version_id"])
            if dv.labels.get("simulated") == "true":
                annotator = dv.labels.get("annotator", "")
                rule = _SIMULATED_RULES.get(annotator, f"the rule of {annotator or 'its backend'}")
                console.print(
                    f"[yellow]preferences ({name}) were SIMULATED[/yellow] "
                    f"({dv.counts.accepted} pairs): {rule}",
                    highlight=False,
                )
        if kind == "evaluate" and "evaluation_id" in out:
            evaluation = client.evaluation(out["evaluation_id"]).run
            table = Table(title=f"evaluation {evaluation.id}")
            for col in ("model", "metric", "value", "95% CI"):
                table.add_column(col)
            for result in evaluation.results:
                for m in result.metrics:
                    table.add_row(
                        result.role, m.name, f"{m.value:.4f}", f"{m.ci_low:.4f} .. {m.ci_high:.4f}"
                    )
            console.print(table)
            deltas = Table(title="candidate vs baselines (paired bootstrap)")
            for col in ("metric", "baseline", "delta", "95% CI"):
                deltas.add_column(col)
            for d in evaluation.comparisons:
                deltas.add_row(
                    d.metric, d.baseline, f"{d.delta:+.4f}", f"{d.ci_low:+.4f} .. {d.ci_high:+.4f}"
                )
            console.print(deltas)
            verdict = "[green]PASSED[/green]" if evaluation.verdict.passed else "[red]FAILED[/red]"
            console.print(f"gate: {verdict}")
            for reason in evaluation.verdict.reasons:
                console.print(f"  {reason}", highlight=False)
            _print_samples(_artifact(settings, evaluation.report_json.uri))
            html = _artifact(settings, evaluation.report_html.uri)
            if report_dir is not None and html:
                report_dir.mkdir(parents=True, exist_ok=True)
                (report_dir / "report.html").write_bytes(html)
                # the plots are embedded in the page; also write them as files
                for png, data in re.findall(
                    r"<h3>([\w.-]+\.png)</h3><img alt='[^']*' src='data:image/png;base64,([^']+)'",
                    html.decode(),
                ):
                    (report_dir / png).write_bytes(base64.b64decode(data))
                console.print(f"report: {report_dir / 'report.html'} (+ PNG plots beside it)")
            elif evaluation.report_html.uri:
                console.print(f"report: artifact {evaluation.report_html.uri}")


#: what each simulated annotator ranks by (tunewright-feedback's documented rules)
_SIMULATED_RULES = {
    "simulated:rubric": "ranked by a checklist that never reads the tickets' own answers "
    "(names the ticket's product and no other, 2-6 numbered steps, ends cleanly, 25-150 "
    "words, no invented prices/URLs/contacts/promises, no repeated lines)",
    "simulated:token-f1": "ranked by token F1 against the tickets' own answers (the same "
    "references the evaluation scores: circular)",
}


def _print_samples(report_json: bytes | None, limit: int = 2) -> None:
    """The first held-out tickets with every model's answer side by side."""
    if not report_json:
        return
    samples = json.loads(report_json).get("samples", [])[:limit]
    if not samples:
        return
    roles = sorted({r for s in samples for r in s["outputs"]}, key=lambda r: r != "base")
    for i, sample in enumerate(samples, 1):
        table = Table(title=f"held-out ticket {i}", show_lines=True)
        prompt = sample["prompt"]
        if prompt.startswith("["):  # chat messages as JSON: show the user's words
            try:
                prompt = "\n".join(m.get("content", "") for m in json.loads(prompt))
            except (ValueError, AttributeError):
                pass
        table.add_column("ticket / reference")
        for role in roles:
            table.add_column(role)
        table.add_row(
            f"{escape(prompt[:400])}\n\n[dim]reference:[/dim] {escape(sample['reference'][:400])}",
            *(escape(sample["outputs"].get(role, "")[:500]) for role in roles),
        )
        console.print(table)


def _print_summary(client: RegistryClient, summary: RunSummary) -> None:
    table = Table(title=f"pipeline {summary.name} ({summary.run_id}): {summary.status}")
    for col in ("stage", "kind", "status", "outputs"):
        table.add_column(col)
    for name, kind, status, outputs in summary.stages:
        colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(
            status, "default"
        )
        shown = ", ".join(f"{k}={v}" for k, v in sorted(outputs.items()))
        table.add_row(name, kind, f"[{colour}]{status}[/{colour}]", shown)
    console.print(table)
    if summary.model_version_id:
        graph = client.lineage(summary.model_version_id)
        console.print(f"model version [bold]{summary.model_version_id}[/bold], lineage:")
        labels = {n.id: n.label for n in graph.nodes}
        for edge in graph.edges:
            console.print(
                f"  {labels.get(edge.from_id, edge.from_id)} --{edge.relation}--> "
                f"{labels.get(edge.to_id, edge.to_id)}",
                highlight=False,
            )


@cli.command()
@click.argument("spec_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("-p", "--param", "params", multiple=True, help="name=value for ${params.name}.")
@click.option(
    "--request-id", default="", help="Idempotency key: resubmitting returns the same run."
)
@click.option("--detach", is_flag=True, help="Submit and print the run id; do not follow.")
@config_option
@data_dir_option
@registry_option
@click.option("--nats-url", help="NATS for live progress (default: the local stack's).")
@click.option(
    "--report-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write the evaluation's report.html and PNG plots here.",
)
def run(
    spec_file: Path,
    params: tuple[str, ...],
    request_id: str,
    detach: bool,
    config: Path | None,
    data_dir: Path | None,
    registry: str | None,
    nats_url: str | None,
    report_dir: Path | None,
) -> None:
    """Submit a pipeline YAML to the registry and follow it to the end.

    Exits 0 when the pipeline succeeded; 1 with the failing stage and reason otherwise.
    """
    client = _client(config, data_dir, registry)
    try:
        run_id = client.submit(spec_file, parse_parameters(params), request_id)
        console.print(f"submitted pipeline run [bold]{run_id}[/bold]")
        if detach:
            click.echo(run_id)
            return
        settings = _settings(config, data_dir, nats_url)
        summary = _follow_with_progress(client, run_id, settings)
        _print_summary(client, summary)
        _print_report(client, run_id, settings, report_dir)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        client.close()
    if summary.status != "succeeded":
        stage = f" at stage {summary.failed_stage}" if summary.failed_stage else ""
        raise click.ClickException(f"pipeline {summary.status}{stage}: {summary.error}")


@cli.command()
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--ingest", help="Ingest gRPC address (default: the local stack's ingest port).")
@config_option
@data_dir_option
def upload(path: Path, ingest: str | None, config: Path | None, data_dir: Path | None) -> None:
    """Upload a raw dataset file to the ingest service; prints its artifact URI.

    Use the URI as a pipeline's source: `tunewright run pipeline.yaml -p source=URI`.
    """
    settings = _settings(config, data_dir, None)
    address = ingest or f"127.0.0.1:{settings.stack.ports['ingest']}"
    try:
        uri = upload_file(address, path, probe=_probe(settings))
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(uri)


@cli.command()
@click.option("--limit", default=20, show_default=True, help="How many recent runs.")
@config_option
@data_dir_option
@registry_option
def runs(limit: int, config: Path | None, data_dir: Path | None, registry: str | None) -> None:
    """Recent pipeline runs of the workspace, newest first."""
    client = _client(config, data_dir, registry)
    try:
        summaries = client.runs(limit)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        client.close()
    table = Table(title="pipeline runs")
    for col in ("run", "pipeline", "status", "stages", "model version"):
        table.add_column(col)
    for s in summaries:
        done = sum(1 for stage in s.stages if stage[2] == "succeeded")
        table.add_row(s.run_id, s.name, s.status, f"{done}/{len(s.stages)}", s.model_version_id)
    console.print(table)


@cli.command()
@click.argument("run_id")
@config_option
@data_dir_option
@registry_option
def logs(run_id: str, config: Path | None, data_dir: Path | None, registry: str | None) -> None:
    """A pipeline run's events: what happened so far, then live until it ends."""
    client = _client(config, data_dir, registry)
    try:
        summary = _follow(client, run_id)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        client.close()
    console.print(f"run {run_id}: {summary.status}")


@cli.command()
@click.argument("run_id")
@click.option("--reason", default="cancelled from the CLI", show_default=True)
@config_option
@data_dir_option
@registry_option
def cancel(
    run_id: str, reason: str, config: Path | None, data_dir: Path | None, registry: str | None
) -> None:
    """Cancel a pipeline run (the running stage's service is asked to stop its job)."""
    client = _client(config, data_dir, registry)
    try:
        summary = client.cancel(run_id, reason)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        client.close()
    console.print(f"run {run_id}: {summary.status}")


@cli.command("rerun")
@click.argument("model_version")
@click.option(
    "--tolerance",
    default=1e-4,
    show_default=True,
    help="Largest final-loss difference that counts as reproduced.",
)
@click.option("--check", is_flag=True, help="Exit 1 when the final loss is not reproduced.")
@config_option
@data_dir_option
@registry_option
@click.option("--nats-url", help="NATS for live progress (default: the local stack's).")
def rerun_command(
    model_version: str,
    tolerance: float,
    check: bool,
    config: Path | None,
    data_dir: Path | None,
    registry: str | None,
    nats_url: str | None,
) -> None:
    """Train MODEL_VERSION (an id or model:alias) again from its recorded spec and lineage,
    and compare the two runs: final metrics and what differs in the run environment."""
    from tunewright.cli.export import parse_model_ref
    from tunewright.cli.rerun import RerunError, compare, rerun_pipeline

    client = _client(config, data_dir, registry)
    try:
        ref = parse_model_ref(model_version)
        version = client.model_version(ref)
        if not version.training_run_id:
            raise RerunError(f"{version.id} was registered without a training run")
        original = client.training_run(version.training_run_id)
        run_id = client.submit_yaml(rerun_pipeline(version, original), requested_by="cli rerun")
        console.print(f"rerunning {version.id} as pipeline run [bold]{run_id}[/bold]")
        summary = _follow_with_progress(client, run_id, _settings(config, data_dir, nats_url))
        _print_summary(client, summary)
        if summary.status != "succeeded":
            raise click.ClickException(f"rerun {summary.status}: {summary.error}")
        again = client.training_run(client.model_version(summary.model_version_id).training_run_id)
    except (PipelineError, RerunError, ExportError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        client.close()
    result = compare(original, again)
    table = Table(title=f"{version.id} vs its rerun {summary.model_version_id}")
    for col in ("metric", "original", "rerun", "difference"):
        table.add_column(col)
    for name, a, b in result.metrics:
        table.add_row(name, f"{a:.6f}", f"{b:.6f}", f"{b - a:+.2e}")
    console.print(table)
    for name, a, b in result.environment:
        console.print(f"environment differs: {name}: {a or '-'} -> {b or '-'}", highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    if result.final_loss_delta is None:
        console.print("final loss: not recorded by one of the runs")
    elif result.reproduced(tolerance):
        console.print(
            f"[green]reproduced[/green]: final loss within {tolerance:g} "
            f"({result.final_loss_delta:+.2e})"
        )
    else:
        console.print(
            f"[red]not reproduced[/red]: final loss differs by {result.final_loss_delta:+.2e} "
            f"(tolerance {tolerance:g})"
        )
        if check:
            sys.exit(1)


@cli.command("export")
@click.argument("model_version")
@click.option(
    "--merged",
    "merged_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write the chain merged into one safetensors checkpoint + tokenizer here "
    "(transformers AutoModelForCausalLM.from_pretrained(DIR)).",
)
@click.option(
    "--adapter",
    "adapter_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write one PEFT LoRA adapter for the base model here (vLLM --lora-modules); "
    "the LoRA links of a chain are combined exactly.",
)
@click.option("--force", is_flag=True, help="Replace DIR when it is not empty.")
@config_option
@data_dir_option
@registry_option
@click.option(
    "--nats-url",
    help="NATS of the artifact store when artifacts.backend is nats (default: the local stack's).",
)
def export_command(
    model_version: str,
    merged_dir: Path | None,
    adapter_dir: Path | None,
    force: bool,
    config: Path | None,
    data_dir: Path | None,
    registry: str | None,
    nats_url: str | None,
) -> None:
    """Write MODEL_VERSION (an id or model:alias, e.g. support-bot:production) as files that
    other tools load, with a tunewright-export.json saying what it is.

    --merged DIR: the base with every adapter of the version's chain merged in (a full
    checkpoint replaces the weights) and the version's tokenizer (chat template, EOS).

    --adapter DIR: adapter_config.json + adapter_model.safetensors to apply to the base
    model; refused for a chain with full weights (export those --merged).
    """
    if (merged_dir is None) == (adapter_dir is None):
        raise click.UsageError("give exactly one of --merged DIR and --adapter DIR")
    out = merged_dir if merged_dir is not None else adapter_dir
    assert out is not None
    settings = _settings(config, data_dir, nats_url)
    try:
        result = export_model(
            settings,
            model_version,
            fmt="merged" if merged_dir is not None else "adapter",
            out=out,
            force=force,
            registry=registry,
        )
    except (ExportError, PipelineError, StackError, TunewrightError) as exc:
        raise click.ClickException(str(exc)) from None
    m = result.manifest
    links = ", ".join(f"{link['model_version_id']} ({link['weights']})" for link in m["links"])
    console.print(
        f"exported model version [bold]{m['model_version_id']}[/bold] ({m['model']} "
        f"v{m['version']}) on {m['base_model']} as {m['format']} into {result.out}",
        highlight=False,
    )
    console.print(f"  chain, root first: {links}", highlight=False)
    if m["format"] == "merged":
        console.print(
            f"  load: AutoModelForCausalLM.from_pretrained({str(result.out)!r}), "
            f"AutoTokenizer.from_pretrained({str(result.out)!r})",
            highlight=False,
        )
    else:
        adapter = m["adapter"]
        console.print(
            f"  LoRA r={adapter['r']} ({adapter['combined']}): serve it with the base model, "
            f"e.g. vLLM --enable-lora --max-lora-rank >= {adapter['r']} "
            f"--lora-modules {m['model']}={result.out}",
            highlight=False,
        )


@cli.group()
def identity() -> None:
    """Callers of the stack with their own tokens and roles (see tunewright.core.identities)."""


@identity.command("add")
@click.argument("name")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["viewer", "submitter", "reviewer", "promoter", "admin"]),
    help="What the identity may do: submitter submits work; reviewer also approves human "
    "gates; promoter also promotes and rolls back; admin also forces promotions.",
)
@config_option
@data_dir_option
def identity_add(name: str, role: str, config: Path | None, data_dir: Path | None) -> None:
    """Add an identity; prints its bearer token once (only its sha256 is kept).

    The services read identities when they start: `tunewright down && tunewright up`.
    """
    settings = _settings(config, data_dir, None)
    try:
        token = add_identity(settings.data_dir, name, role)
    except (StackError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(token)
    click.echo(
        f"identity {name} ({role}) added to {settings.data_dir.resolve() / 'identities.yaml'}; "
        "the token above is shown once. Restart the stack for the services to accept it.",
        err=True,
    )


@cli.group()
def pii() -> None:
    """PII detection with the ingest service's engine and defaults."""


@pii.command("detect")
@config_option
@data_dir_option
def pii_detect(config: Path | None, data_dir: Path | None) -> None:
    """Read JSONL {"id","text"} on stdin, write {"id","spans":[[start,end,type],...]} on stdout.

    The engine, settings (TW_INGEST__*, --config) and recognizer plugins are the ingest
    service's, so a scrubber can be scored from outside on any labelled set.
    """
    # heavy imports (spaCy, presidio) only for this command
    from tunewright.core.errors import InvalidArgument
    from tunewright.core.plugins import PluginManager
    from tunewright.ingest import detect
    from tunewright.ingest.settings import IngestSettings

    overrides: dict[str, Any] = {} if data_dir is None else {"data_dir": data_dir}
    try:
        settings = load_settings(IngestSettings, config, **overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    registries = PluginManager().load(disabled=settings.plugins.disabled)
    try:
        detect.run(sys.stdin, sys.stdout, settings, registries)
    except InvalidArgument as exc:
        raise click.ClickException(str(exc)) from None


cli.add_command(dlq)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
