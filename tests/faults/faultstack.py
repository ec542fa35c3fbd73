"""A real stack for the fault suite: `tunewright up` (nats-server and the seven services as
processes, default credentials on) in a temporary data dir, and what the cases do to it —
kill a service's process group with SIGKILL, bring it back with `up`, follow a pipeline run
through registry outages, and read back what the stack wrote (logs, NATS stream files) to
look for planted PII."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from tunewright.cli.pipelines import PipelineError, RegistryClient
from tunewright.cli.stack import Probe, StackSettings, with_local_credentials
from tunewright.common.v1 import common_pb2
from tunewright.core.settings import load_settings
from tunewright.registry.v1 import registry_pb2

FINAL = (common_pb2.JOB_STATUS_SUCCEEDED, common_pb2.JOB_STATUS_FAILED,
         common_pb2.JOB_STATUS_CANCELLED)  # fmt: skip

#: a pipeline every service takes part in, on the tiny local model: curation, LoRA SFT,
#: preference candidates and simulated ranking (synth), DPO on the SFT model, evaluation
#: against the base. Deadlines make a stage that can never finish fail with a reason.
PIPELINE = """
name: faults
stages:
  - name: curate
    kind: ingest
    deadline_seconds: 420
    spec:
      dataset: fault-tickets
      source: {uri: "${params.source}"}
      split: {eval_fraction: 0.1, seed: 3}
  - name: sft
    kind: train
    deadline_seconds: 420
    spec:
      method: sft
      base_model: tiny:llama-xxs
      output_model: fault-model
      datasets: [{id: "${stages.curate.dataset_version_id}"}]
      peft: {type: PEFT_TYPE_LORA, r: 4, alpha: 8}
      hyperparameters: {max_steps: 60, batch_size: 4, max_length: 64, learning_rate: 0.002}
      seed: 11
      resources: {device: cpu}
  - name: candidates
    kind: candidates
    deadline_seconds: 420
    spec:
      preference_candidates:
        prompts: {id: "${stages.curate.dataset_version_id}"}
        model: {id: "${stages.sft.model_version_id}"}
        responses_per_prompt: 2
        max_prompts: 12
        feedback_backend: {name: simulated, params: {key_terms: [AcmeCRM, AcmeDesk]}}
        feedback_dataset: "fault-prefs-${run.id}"
        generation: {max_new_tokens: 24, temperature: 1.0, batch_size: 4}
      seed: 7
  - name: feedback
    kind: feedback
    deadline_seconds: 420
    spec:
      feedback_collection:
        feedback_backend: {name: simulated, params: {key_terms: [AcmeCRM, AcmeDesk]}}
        feedback_dataset: "fault-prefs-${run.id}"
        output_dataset: fault-preferences
        min_records: 12
        wait_timeout_seconds: 400
        poll_interval_seconds: 1
  - name: dpo
    kind: train
    deadline_seconds: 420
    spec:
      method: dpo
      parent_model: {id: "${stages.sft.model_version_id}"}
      output_model: fault-model
      datasets: [{id: "${stages.feedback.dataset_version_id}"}]
      peft: {type: PEFT_TYPE_LORA, r: 4, alpha: 8}
      hyperparameters: {max_steps: 30, batch_size: 4, max_length: 64, learning_rate: 0.0005}
      resources: {device: cpu}
  - name: evaluate
    kind: evaluate
    deadline_seconds: 420
    spec:
      candidate: {role: candidate, model: {id: "${stages.dpo.model_version_id}"}}
      baselines: [{role: base, base_model: "tiny:llama-xxs"}]
      dataset: {id: "${stages.curate.dataset_version_id}"}
      metrics: [{name: rouge_l}, {name: token_f1}]
      generation: {max_new_tokens: 24, batch_size: 2}
      max_samples: 40
      bootstrap_samples: 200
      seed: 7
      gate:  # no promotion follows: the verdict is recorded, whatever it is
        rules: [{metric: rouge_l, baseline: base, min_delta: -1.0}]
"""

#: a pipeline of curation alone, for the concurrency case
CURATE_ONLY = """
name: curate-only
stages:
  - name: curate
    kind: ingest
    deadline_seconds: 600
    spec:
      dataset: "${params.dataset}"
      source: {uri: "${params.source}"}
      split: {eval_fraction: 0.2, seed: 1}
"""


def planted_email(i: int) -> str:
    """A customer address planted in row ``i``: it must reach no log and no event."""
    return f"dana.okafor{i}@mailbox-example.org"


def write_tickets(path: Path, n: int, *, duplicates: int = 0, bad_lines: int = 0) -> int:
    """``n`` distinct tickets (each with a planted e-mail), ``duplicates`` exact copies of
    some of them and ``bad_lines`` lines that are not JSON; returns the rows written."""
    products = ("AcmeCRM", "AcmeDesk")
    lines = []
    for i in range(n):
        product = products[i % 2]
        lines.append(
            json.dumps(
                {
                    "messages": [
                        {
                            "role": "user",
                            "content": f"Ticket {i}: {product} export number {i * 7} fails, "
                            f"write me at {planted_email(i)}",
                        },
                        {"role": "assistant", "content": f"Re-run the {product} export {i}."},
                    ]
                }
            )
        )
    lines += lines[:duplicates]
    lines += [f'{{"messages": [broken line {i}' for i in range(bad_lines)]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


@dataclass
class FaultStack:
    """One `tunewright up` stack in ``root`` (its data dir is ``root/.tunewright``)."""

    root: Path
    cli: Any  # the StackCli of the root conftest
    extra_config: dict[str, Any] = field(default_factory=dict)
    #: variables for `up`, which the services inherit (settings of one service's own section)
    env: dict[str, str] = field(default_factory=dict)
    settings: StackSettings | None = None

    CFG = ("--config", "tunewright.yaml")

    def write_config(self) -> None:
        nats_port, http_port, *ports = self.cli.free_ports(2 + len(self.cli.services))
        config = {
            "stack": {
                "nats_port": nats_port,
                "serve_http_port": http_port,
                "ports": dict(zip(self.cli.services, ports, strict=True)),
                "start_timeout_s": 120,
            },
            **self.extra_config,
        }
        (self.root / "tunewright.yaml").write_text(yaml.safe_dump(config))
        self.settings = with_local_credentials(
            load_settings(StackSettings, self.root / "tunewright.yaml", data_dir=self.data_dir)
        )

    @property
    def data_dir(self) -> Path:
        return self.root / ".tunewright"

    def up(self) -> str:
        out: str = self.cli.run("up", *self.CFG, cwd=self.root, timeout=240, env=self.env).stdout
        return out

    def down(self) -> None:
        self.cli.run("down", *self.CFG, cwd=self.root, check=False, timeout=120)

    def upload(self, path: Path) -> str:
        out: str = self.cli.run("upload", str(path), *self.CFG, cwd=self.root).stdout
        return out.strip()

    def pids(self) -> dict[str, int]:
        state = json.loads((self.data_dir / "stack.json").read_text())
        pids = {name: proc["pid"] for name, proc in state["services"].items()}
        pids["nats"] = int((self.data_dir / "nats" / "nats-server.pid").read_text())
        return pids

    def kill(self, name: str) -> int:
        """SIGKILL the service's whole process group (its training or generation workers die
        with it, as in a lost container); returns the pid that died."""
        pid = self.pids()[name]
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 20
        while self.cli.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not self.cli.alive(pid), f"{name} (pid {pid}) survived SIGKILL"
        return pid

    def registry(self) -> RegistryClient:
        assert self.settings is not None
        return RegistryClient(self.settings)

    def channel(self, service: str) -> tuple[grpc.Channel, tuple[tuple[str, str], ...]]:
        assert self.settings is not None
        probe = Probe.from_settings(self.settings.grpc)
        return probe.channel(self.settings.stack.ports[service]), probe.metadata

    def submit(self, spec: str, parameters: dict[str, str], request_id: str = "") -> str:
        client = self.registry()
        try:
            return client.submit_yaml(spec, parameters, request_id=request_id)
        finally:
            client.close()

    def get_run(self, run_id: str) -> registry_pb2.PipelineRun | None:
        """The run, or None while the registry does not answer (it may be down on purpose)."""
        client = self.registry()
        try:
            return client.run(run_id)
        except (PipelineError, grpc.RpcError):
            return None
        finally:
            client.close()

    def follow(
        self,
        run_id: str,
        *,
        timeout_s: float,
        on_poll: Callable[[registry_pb2.PipelineRun | None], None] = lambda run: None,
        poll_s: float = 0.3,
    ) -> registry_pb2.PipelineRun:
        """Poll the run until it ends, calling ``on_poll`` each time (faults go there)."""
        deadline = time.monotonic() + timeout_s
        last: registry_pb2.PipelineRun | None = None
        while time.monotonic() < deadline:
            run = self.get_run(run_id)
            on_poll(run)
            if run is not None:
                last = run
                if run.status in FINAL:
                    return run
            time.sleep(poll_s)
        stages = {s.name: (s.status, s.error.message) for s in last.stages} if last else {}
        raise AssertionError(f"run {run_id} did not end in {timeout_s:.0f} s: {stages}")

    def logs_text(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted((self.data_dir / "logs").glob("*.log"))
        )

    def event_stream_bytes(self) -> bytes:
        """Every message block of the NATS event streams as stored on disk. Left out: the
        object-store buckets (uploaded sources, artifacts) and TW_TRAFFIC — like an upload,
        it is an input: raw interactions as the serving side logged them, read only by the
        monitor, which scrubs each window before it stores or publishes anything."""
        blobs = []
        for stream in (self.data_dir / "nats").rglob("streams/*"):
            if stream.name.startswith(("OBJ_", "KV_")) or stream.name == "TW_TRAFFIC":
                continue
            blobs += [blk.read_bytes() for blk in stream.rglob("*.blk")]
        return b"\n".join(blobs)

    def leaked(self, secrets: Iterable[str]) -> list[str]:
        """Which of ``secrets`` appear in the stack's logs or event streams."""
        logs = self.logs_text()
        events = self.event_stream_bytes()
        return [s for s in secrets if s in logs or s.encode() in events]


def stage(run: registry_pb2.PipelineRun, name: str) -> registry_pb2.StageState:
    return next(s for s in run.stages if s.name == name)


def outcome_of(run: registry_pb2.PipelineRun) -> str:
    """``succeeded`` or ``failed: <reason>`` (the stated reason a run must give)."""
    if run.status == common_pb2.JOB_STATUS_SUCCEEDED:
        return "succeeded"
    failed = [s for s in run.stages if s.error.message]
    where = f"{failed[0].name}: " if failed else ""
    message = failed[0].error.message if failed else run.error.message
    return f"{common_pb2.JobStatus.Name(run.status).lower()}: {where}{message}"
