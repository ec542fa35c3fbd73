"""Lineage: where a model version came from, down to the curation reports of its data.

The graph walks parent models, training runs, dataset versions (and their parents), curation
reports and PII audits, base models and evaluations of the root model.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunewright.registry import models
from tunewright.registry.v1 import registry_pb2

Kind = registry_pb2.LineageNodeKind


@dataclass
class Graph:
    root_id: str
    nodes: dict[str, registry_pb2.LineageNode] = field(default_factory=dict)
    edges: list[registry_pb2.LineageEdge] = field(default_factory=list)

    def node(self, node_id: str, node_kind: int, label: str, **attributes: str) -> None:
        if node_id not in self.nodes:
            self.nodes[node_id] = registry_pb2.LineageNode(
                id=node_id,
                kind=node_kind,
                label=label,
                attributes={k: v for k, v in attributes.items() if v},
            )

    def edge(self, from_id: str, to_id: str, relation: str) -> None:
        self.edges.append(registry_pb2.LineageEdge(from_id=from_id, to_id=to_id, relation=relation))


def _dataset(graph: Graph, session: Session, dv_id: str, seen: set[str]) -> None:
    if dv_id in seen:
        return
    seen.add(dv_id)
    row = session.get(models.DatasetVersion, dv_id)
    if row is None:
        graph.node(dv_id, Kind.LINEAGE_NODE_KIND_DATASET_VERSION, dv_id, registered="false")
        return
    graph.node(
        row.id,
        Kind.LINEAGE_NODE_KIND_DATASET_VERSION,
        f"{row.dataset} v{row.version}",
        kind=row.kind,
        source=row.source,
        content_hash=row.content_hash,
        rows=str(row.counts.get("accepted", "")),
    )
    for relation, ref in (("curation_report", row.curation_report), ("pii_audit", row.pii_audit)):
        if ref:
            uri = ref.get("uri") or f"tw-artifact:sha256:{ref.get('sha256', '')}"
            graph.node(uri, Kind.LINEAGE_NODE_KIND_ARTIFACT, relation.replace("_", " "), uri=uri)
            graph.edge(row.id, uri, relation)
    for parent in row.parents:
        graph.edge(row.id, parent.parent_id, "derived_from")
        _dataset(graph, session, parent.parent_id, seen)


def lineage(session: Session, root: models.ModelVersion) -> Graph:
    graph = Graph(root_id=root.id)
    datasets_seen: set[str] = set()
    queue: deque[models.ModelVersion] = deque([root])
    models_seen: set[str] = set()
    while queue:
        mv = queue.popleft()
        if mv.id in models_seen:
            continue
        models_seen.add(mv.id)
        graph.node(
            mv.id,
            Kind.LINEAGE_NODE_KIND_MODEL_VERSION,
            f"{mv.model} v{mv.version}",
            method=mv.method,
            base_model=mv.base_model,
        )
        if mv.training_run_id:
            run = session.get(models.TrainingRun, mv.training_run_id)
            label = f"{run.method or 'training'} run" if run else mv.training_run_id
            graph.node(
                mv.training_run_id,
                Kind.LINEAGE_NODE_KIND_TRAINING_RUN,
                label,
                job_id=run.job_id if run else "",
                status=run.status if run else "",
            )
            graph.edge(mv.id, mv.training_run_id, "produced_by")
        for link in mv.datasets:
            graph.edge(mv.id, link.dataset_version_id, "trained_on")
            _dataset(graph, session, link.dataset_version_id, datasets_seen)
        if mv.parent_model_version_id:
            graph.edge(mv.id, mv.parent_model_version_id, "parent_model")
            parent = session.get(models.ModelVersion, mv.parent_model_version_id)
            if parent is not None:
                queue.append(parent)
        else:
            graph.node(mv.base_model, Kind.LINEAGE_NODE_KIND_BASE_MODEL, mv.base_model)
            graph.edge(mv.id, mv.base_model, "base_model")
    for evaluation in session.scalars(
        select(models.Evaluation).where(models.Evaluation.candidate_model_version_id == root.id)
    ):
        graph.node(
            evaluation.id,
            Kind.LINEAGE_NODE_KIND_EVALUATION,
            "evaluation",
            passed=str(evaluation.passed).lower(),
        )
        graph.edge(evaluation.id, root.id, "evaluates")
    return graph
