"""Validates deploy/kubernetes/ offline, as CI can (no cluster is reachable there):

- every overlay (and the base) rendered with kustomize (deploy/local/kustomize.sh);
- the operator's kinds (FlinkDeployment, FlinkStateSnapshot) against the ``openAPIV3Schema`` of
  the operator's CRDs (``crds/``), strictly: a field the schema does not declare is an error, as
  a typo like ``upgradeMod`` would otherwise be dropped by the API server without a word;
- built-in kinds against the Kubernetes schemas that kubernetes-validate bundles, strictly;
- what ties them together: the job's settings in the ConfigMap load with the job's own loader,
  TaskManager memory is what ``flink_jobs.flink.cluster_memory`` derives for the slots, the
  PodMonitor's ports exist on the pods, every image path named is one the Dockerfile provides;
- the Dockerfile with hadolint.

    .venv/bin/python deploy/kubernetes/validate.py       # prints each problem; exit 1 if any
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any, Iterator

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

KUBERNETES_VERSION = "1.32"
TARGETS = [HERE / "base", *sorted(p for p in (HERE / "overlays").iterdir() if p.is_dir())]
SNAPSHOTS = sorted((HERE / "snapshots").glob("*.yaml"))
FLINK_PROCESS_SIZE = "1600m"  # Flink's own share of a TaskManager, as deploy/local/cluster.sh


def kustomize() -> str:
    return subprocess.run(
        [str(ROOT / "deploy" / "local" / "kustomize.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()


def render(target: Path) -> list[dict[str, Any]]:
    out = subprocess.run([kustomize(), "build", str(target)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"kustomize build {target.relative_to(ROOT)} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


# ---- the operator's CRDs ------------------------------------------------------------------------


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the version's openAPIV3Schema, made strict."""
    out = {}
    for path in sorted((HERE / "crds").glob("*.yml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            out[(f"{group}/{version['name']}", kind)] = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    return out


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with ``additionalProperties: false`` wherever it lists properties and neither
    allows others nor preserves unknown fields (what ``kubectl --validate=strict`` reports)."""
    if isinstance(schema.get("properties"), dict):
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        for child in schema["properties"].values():
            _strict(child)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _strict(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        for child in schema.get(key, []):
            _strict(child)
    return schema


def check_custom(doc: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    import jsonschema

    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    schema = {**schema, "properties": {k: v for k, v in schema.get("properties", {}).items() if k not in ("apiVersion", "kind", "metadata")}}
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}" for e in validator.iter_errors(body)]


def check_builtin(doc: dict[str, Any]) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(str(p) for p in exc.path) or '(top)'}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"no Kubernetes {KUBERNETES_VERSION} schema for it: {exc}"]
    return []


# ---- what ties them together ---------------------------------------------------------------------


def dockerfile_paths() -> set[str]:
    """Image paths the Dockerfile provides (what it copies, installs, builds, mounts)."""
    text = (HERE / "Dockerfile").read_text()
    return set(re.findall(r"(/opt/[\w./-]+)", text))


def image_paths_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield from re.findall(r"(?<![\w:/])(/opt/segments/[\w./-]+)", value)
        if value.startswith("local:///opt/"):
            yield value[len("local://"):]
    elif isinstance(value, dict):
        for v in value.values():
            yield from image_paths_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from image_paths_in(v)


def check_together(docs: list[dict[str, Any]]) -> list[str]:
    from flink_jobs.config import ConfigError, load_config, parse_memory_size
    from flink_jobs.flink.cluster_memory import taskmanager_memory

    problems = []
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    provided = dockerfile_paths()
    images = {image for doc in docs for image in images_in(doc)}
    if len(images) > 1:
        problems.append(f"more than one image: {', '.join(sorted(images))} (one image runs the job, the service and retraining)")
    for doc in docs:
        for path in image_paths_in(doc.get("spec", {})):
            known = (
                path in provided
                or any(path.startswith(p.rstrip("/") + "/") or p.startswith(path.rstrip("/") + "/") for p in provided)
                or path.startswith("/opt/flink/")  # the Flink image's own (FLINK_HOME)
            )
            if not known:
                problems.append(f"{doc['kind']}/{doc['metadata'].get('name')}: {path} is not in the image (deploy/kubernetes/Dockerfile)")
    # The job's settings, through the job's own loader (a wrong name or value fails here, not at start).
    config = None
    for cm in by_kind.get("ConfigMap", []):
        if "job.yaml" in cm.get("data", {}):
            text = cm["data"]["job.yaml"]
            import tempfile

            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
                f.write(text)
            try:
                config = load_config(["--config", f.name], environ={})
            except ConfigError as exc:
                problems.append(f"ConfigMap/{cm['metadata']['name']} job.yaml: {exc}")
            finally:
                Path(f.name).unlink()
    for fd in by_kind.get("FlinkDeployment", []):
        spec = spec_of(fd)
        conf = spec.get("flinkConfiguration", {})
        slots = int(conf.get("taskmanager.numberOfTaskSlots", 1))
        if config is not None:
            want = taskmanager_memory(config, slots, parse_memory_size("process size", FLINK_PROCESS_SIZE))
            for key in want:
                if conf.get(key) != want[key]:
                    problems.append(f"FlinkDeployment: {key} is {conf.get(key)}, cluster_memory derives {want[key]} for {slots} slots")
            if spec["taskManager"]["resource"]["memory"] != want["taskmanager.memory.process.size"]:
                problems.append(f"FlinkDeployment: taskManager.resource.memory is not {want['taskmanager.memory.process.size']}")
            if config.job.parallelism not in (0, spec["job"].get("parallelism")):
                problems.append("FlinkDeployment: job.parallelism in job.yaml overrides spec.job.parallelism (set it to 0)")
            if config.job.checkpoint_dir != conf.get("execution.checkpointing.dir"):
                problems.append("FlinkDeployment: execution.checkpointing.dir differs from job.checkpoint_dir in job.yaml")
        parallelism = spec["job"].get("parallelism", 1)
        if config is not None and parallelism > config.job.batch_keys:
            problems.append(f"FlinkDeployment: parallelism {parallelism} is above job.batch_keys {config.job.batch_keys}")
        ports = {p["name"] for c in spec.get("podTemplate", {}).get("spec", {}).get("containers", []) for p in c.get("ports", [])}
        for pm in by_kind.get("PodMonitor", []):
            for endpoint in pm["spec"]["podMetricsEndpoints"]:
                if endpoint["port"] not in ports:
                    problems.append(f"PodMonitor/{pm['metadata']['name']}: port {endpoint['port']} is not on the job's pods")
            if pm["spec"]["selector"]["matchLabels"].get("app") != fd["metadata"]["name"]:
                problems.append(f"PodMonitor/{pm['metadata']['name']}: selects app={pm['spec']['selector']['matchLabels'].get('app')}, the job's pods are app={fd['metadata']['name']}")
    return problems


def images_in(doc: dict[str, Any]) -> Iterator[str]:
    if doc["kind"] == "FlinkDeployment":
        yield doc["spec"]["image"]
    for key, value in _walk(doc):
        if key == "image" and isinstance(value, str) and doc["kind"] != "FlinkDeployment":
            yield value


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def spec_of(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]


# ---- all of it -----------------------------------------------------------------------------------


def validate_docs(docs: list[dict[str, Any]]) -> list[str]:
    problems = []
    schemas = crd_schemas()
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name') or doc.get('metadata', {}).get('generateName')}"
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in schemas:
            found = check_custom(doc, schemas[key])
        elif doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            found = []  # the Prometheus Operator's CRDs are not here; check_together checks its ports
        else:
            found = check_builtin(doc)
        problems += [f"{where}: {p}" for p in found]
    return problems + check_together(docs)


def hadolint() -> list[str]:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    out = subprocess.run(
        [binary, "--config", str(HERE / ".hadolint.yaml"), "--no-color", str(HERE / "Dockerfile")], capture_output=True, text=True
    )
    return [] if out.returncode == 0 else [f"hadolint: {line}" for line in (out.stdout + out.stderr).splitlines() if line]


def main() -> int:
    problems = []
    for target in TARGETS:
        docs = render(target)
        found = validate_docs(docs)
        kinds = ", ".join(sorted({d["kind"] for d in docs}))
        print(f"{target.relative_to(ROOT)}: {len(docs)} resources ({kinds}): {'ok' if not found else f'{len(found)} problems'}")
        problems += [f"{target.relative_to(ROOT)}: {p}" for p in found]
    for path in SNAPSHOTS:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        found = validate_docs(docs)
        print(f"{path.relative_to(ROOT)}: {'ok' if not found else f'{len(found)} problems'}")
        problems += [f"{path.relative_to(ROOT)}: {p}" for p in found]
    found = hadolint()
    print(f"deploy/kubernetes/Dockerfile (hadolint): {'ok' if not found else f'{len(found)} problems'}")
    problems += found
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

