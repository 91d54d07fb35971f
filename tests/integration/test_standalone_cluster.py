"""The job submitted with `flink run` to a standalone cluster started from the wheel's Flink."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from .conftest import MINUTE, REPO, T0, Scenario, event

pytestmark = pytest.mark.integration

CLUSTER = str(REPO / "deploy" / "local" / "cluster.sh")
MIB = 1024 * 1024


def _taskmanager_memory() -> dict[str, int]:
    """The memory configuration the cluster's TaskManager reports (Flink REST API)."""
    port = os.environ.get("FLINK_REST_PORT", "8081")
    with urllib.request.urlopen(f"http://localhost:{port}/taskmanagers", timeout=10) as r:
        (tm,) = json.load(r)["taskmanagers"]
    with urllib.request.urlopen(f"http://localhost:{port}/taskmanagers/{tm['id']}", timeout=10) as r:
        return json.load(r)["memoryConfiguration"]


def test_job_runs_on_a_standalone_cluster(scenario: Scenario):
    scenario.produce(
        [
            event("v1", "c-views", "product_view", 0),
            event("v2", "c-views", "product_view", 1 * MINUTE),
            event("v3", "c-views", "product_view", 2 * MINUTE),
        ]
    )
    scenario.produce([b"{broken"], key=b"c-x")
    started = subprocess.run([CLUSTER, "start"], capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    try:
        # The state caches (job.state_cache_memory per slot) reserved as task off-heap memory,
        # on top of Flink's own 1600m: the heap stays what Flink gives 1600m (cluster_memory).
        memory = _taskmanager_memory()
        assert memory["taskOffHeap"] == 2 * 768 * MIB
        assert memory["totalProcessMemory"] == (1600 + 2 * 768) * MIB
        assert memory["taskHeap"] >= 300 * MIB
        submitted = subprocess.run(
            [CLUSTER, "submit", "--bounded", *scenario.settings()], capture_output=True, text=True, timeout=600
        )
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        assert "Job has been submitted with JobID" in submitted.stdout
    finally:
        subprocess.run([CLUSTER, "stop"], capture_output=True, text=True, timeout=120)
    changes = [(k, v["segment"], v["kind"], v["event_time"] - T0) for k, v in scenario.read("changes")]
    assert changes == [
        ("c-views", "repeat_product_viewer", "enter", 2 * MINUTE),
        ("c-views", "repeat_product_viewer", "exit", 10 * MINUTE),
    ]
    assert [(k, v["code"]) for k, v in scenario.read("dlq")] == [("c-x", "not_json")]
    assert scenario.redis_state() == {"ver:c-views": {"repeat_product_viewer": T0 + 10 * MINUTE}}
    assert subprocess.run([CLUSTER, "status"], capture_output=True).returncode == 3


# Where each path of the image (deploy/kubernetes/Dockerfile) is in this checkout.
def _image_paths(tmp_path) -> dict[str, str]:
    from flink_jobs.flink.jvm import ensure_jar, flink_home, local_connector_jar

    return {
        "/opt/segments/venv": str(REPO / ".venv"),
        "/opt/segments/conf/job.yaml": str(tmp_path / "job.yaml"),
        "/opt/segments/jars/flink-sql-connector-kafka.jar": str(local_connector_jar()),
        "/opt/segments/jars/segments-flink.jar": str(ensure_jar()),
        "/opt/segments/rules": str(REPO / "rules"),
        "/opt/segments/model_artifacts": str(REPO / "model_artifacts"),
        "/opt/flink": str(flink_home()),
    }


def _mapped(value: str, paths: dict[str, str]) -> str:
    for image, local in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        if value == image or value.startswith(image + "/"):
            return local + value[len(image):]
        if value.startswith("local://" + image):
            return local + value[len("local://" + image):]
    assert "/opt/" not in value, f"{value}: an image path this test does not map"
    return value


def _image_environment(paths: dict[str, str]) -> dict[str, str]:
    """The Dockerfile's ENV, mapped to this checkout."""
    import re

    text = (REPO / "deploy" / "kubernetes" / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.rsplit("\nFROM ", 1)[1]
    env = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', line[4:]):
                parts = value.strip('"').replace("$PATH", os.environ["PATH"]).split(":") if key == "PATH" else [value.strip('"')]
                env[key] = ":".join(_mapped(part, paths) for part in parts)
    return env


def test_the_images_entry_point_and_arguments_run_on_a_standalone_cluster(scenario: Scenario, tmp_path):
    """What the operator runs in the image (the FlinkDeployment's jarURI, entryClass, args,
    python.executable and parallelism; the image's environment; the ConfigMap's job.yaml), with
    each image path mapped to this checkout's, submitted to a standalone cluster."""
    import yaml

    base = REPO / "deploy" / "kubernetes" / "base"
    [deployment] = [d for d in yaml.safe_load_all((base / "flinkdeployment.yaml").read_text()) if d]
    config_map = yaml.safe_load((base / "job-config.yaml").read_text())
    paths = _image_paths(tmp_path)
    (tmp_path / "job.yaml").write_text(config_map["data"]["job.yaml"])
    spec = deployment["spec"]
    job = spec["job"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
    env.update(_image_environment(paths))
    env["SEGMENTS_REDIS_URL"] = scenario.stack.redis_url  # from the Secret in the cluster
    assert env["SEGMENTS_JOB_CONNECTOR_JAR"] == paths["/opt/segments/jars/flink-sql-connector-kafka.jar"]
    assert env["PATH"].startswith(f"{REPO / '.venv' / 'bin'}:")  # thread mode finds libpython there

    scenario.produce([event(f"v{i}", "c-views", "product_view", i * MINUTE) for i in range(1, 4)])
    started = subprocess.run([CLUSTER, "start"], capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    try:
        port = os.environ.get("FLINK_REST_PORT", "8081")
        command = [
            str(Path(paths["/opt/flink"]) / "bin" / "flink"), "run", "-m", f"localhost:{port}",
            "-p", str(job["parallelism"]),
            "-D", f"python.executable={_mapped(spec['flinkConfiguration']['python.executable'], paths)}",
            "-c", job["entryClass"], _mapped(job["jarURI"], paths),
            *[_mapped(a, paths) for a in job["args"]],
            # What a deployment sets for its own cluster (an overlay of the ConfigMap): here, the
            # test's topics, Kafka and checkpoint folder; job.parallelism stays the ConfigMap's 0.
            "--bounded", *scenario.settings(**{"job.parallelism": None}),
            "--set", f"kafka.bootstrap={scenario.stack.bootstrap}",
            "--set", f"job.checkpoint_dir={(tmp_path / 'checkpoints').as_uri()}",
            # The pod's one metrics port may be taken on a shared machine: the next free one.
            "--set", "metrics.port_end=9299",
        ]
        submitted = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    finally:
        subprocess.run([CLUSTER, "stop"], capture_output=True, text=True, timeout=120)
    changes = [(k, v["segment"], v["kind"], v["event_time"] - T0) for k, v in scenario.read("changes")]
    assert changes == [
        ("c-views", "repeat_product_viewer", "enter", 3 * MINUTE),
        ("c-views", "repeat_product_viewer", "exit", 11 * MINUTE),
    ]
