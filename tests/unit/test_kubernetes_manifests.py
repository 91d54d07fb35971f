"""deploy/kubernetes validates offline: each overlay rendered with kustomize, the operator's kinds
against its CRDs and built-in kinds against the Kubernetes schemas (strictly), the pieces agree
with each other and with the image's Dockerfile, which hadolint passes. And the checks catch what
they are for."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("k8s_validate", REPO / "deploy" / "kubernetes" / "validate.py")
assert _spec and _spec.loader
validate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(validate)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {target.name: validate.render(target) for target in validate.TARGETS}


def test_every_overlay_renders_and_validates(rendered):
    assert set(rendered) >= {"base", "small", "production"}
    for name, docs in rendered.items():
        assert {d["kind"] for d in docs} >= {"FlinkDeployment", "ConfigMap", "Deployment", "Service", "PodMonitor", "CronJob"}, name
        assert validate.validate_docs(docs) == [], name


def test_the_savepoint_snapshot_and_the_dockerfile_pass():
    import yaml

    for path in validate.SNAPSHOTS:
        assert validate.validate_docs(list(yaml.safe_load_all(path.read_text()))) == []
    assert validate.hadolint() == []


def test_the_overlays_differ_where_they_should(rendered):
    def deployment(name):
        [fd] = [d for d in rendered[name] if d["kind"] == "FlinkDeployment"]
        return fd["spec"]

    small, production = deployment("small"), deployment("production")
    assert (small["job"]["parallelism"], production["job"]["parallelism"]) == (1, 4)
    assert small["flinkConfiguration"]["taskmanager.numberOfTaskSlots"] == "1"
    assert production["jobManager"]["replicas"] == 2 and production["job"]["upgradeMode"] == "savepoint"
    assert production["flinkConfiguration"]["high-availability.type"] == "kubernetes"


def test_the_checks_catch_typos_and_disagreements(rendered):
    docs = copy.deepcopy(rendered["production"])
    [fd] = [d for d in docs if d["kind"] == "FlinkDeployment"]
    fd["spec"]["job"]["upgradeMod"] = fd["spec"]["job"].pop("upgradeMode")
    fd["spec"]["flinkVersion"] = "v2_9"
    fd["spec"]["taskManager"]["resource"]["memory"] = "2g"
    fd["spec"]["job"]["args"][5] = "/opt/segments/config/job.yaml"
    [serve] = [d for d in docs if d["kind"] == "Deployment"]
    serve["spec"]["replica"] = serve["spec"].pop("replicas")
    problems = "\n".join(validate.validate_docs(docs))
    assert "'upgradeMod' was unexpected" in problems
    assert "v2_9" in problems
    assert "taskManager.resource.memory" in problems
    assert "/opt/segments/config/job.yaml is not in the image" in problems
    assert "'replica' was unexpected" in problems

    # The job's settings are read by the job's own loader: a misspelt one is named.
    docs = copy.deepcopy(rendered["small"])
    [config] = [d for d in docs if d["kind"] == "ConfigMap"]
    config["data"]["job.yaml"] = config["data"]["job.yaml"].replace("  parallelism: 0", "  paralelism: 0")
    assert "did you mean 'job.parallelism'?" in "\n".join(validate.validate_docs(docs))
