"""
The deploy files, checked without a container engine or a cluster: hadolint, yamllint,
Kubernetes' own schemas and the Compose spec, then the rules they must keep.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, check=False)  # fmt: skip


def _manifests() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def _one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [m for m in _manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("hadolint", ("deploy/Dockerfile",)),
        ("yamllint", ("--strict", "deploy/")),
        ("kubernetes-validate", ("--strict", "--quiet", *sorted(
            str(p.relative_to(ROOT)) for p in (DEPLOY / "k8s").glob("*.yaml")))),
        ("check-jsonschema", ("--builtin-schema", "vendor.compose-spec", "deploy/compose.yaml")),
    ],
)  # fmt: skip
def test_the_files_pass_their_linters(tool: str, args: tuple[str, ...]) -> None:
    """Each maintained checker passes its file(s), offline."""
    result = _run(tool, *args)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_a_user_with_a_health_check() -> None:
    """Multi-stage; installs from the lock only; runs as a non-root uid; checks /healthz."""
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) == 2
    assert "uv sync --locked" in text
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert user
    assert not user[-1].startswith(("0:", "root"))
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", text, re.MULTILINE)


def test_the_api_pods_probe_drain_and_wait_long_enough() -> None:
    """Liveness on /healthz, readiness on /readyz; a preStop; the grace period outlasts
    preStop + the drain + uvicorn's graceful timeout; the cursor key from an optional Secret."""
    spec = _one("Deployment", "bill-api")["spec"]["template"]["spec"]
    (api,) = spec["containers"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pre_stop = api["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    env = {item["name"]: item for item in api["env"]}
    drain = float(env["PERFKIT_DRAIN_SECONDS"]["value"])
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    found = re.search(r'"--timeout-graceful-shutdown", "(\d+)"', dockerfile)
    assert found
    graceful = float(found.group(1))
    assert spec["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain + graceful
    assert env["PERFKIT_CURSOR_SECRET"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_migrations_run_once_as_a_job_and_pods_check_them() -> None:
    """A Job runs `perfkit db upgrade`; the API pods' init container runs `perfkit db check`."""
    job = _one("Job", "bill-api-migrate")["spec"]["template"]["spec"]["containers"][0]
    assert job["command"][:5] == ["python", "-m", "perfkit", "db", "upgrade"]
    init = _one("Deployment", "bill-api")["spec"]["template"]["spec"]["initContainers"][0]
    assert init["command"][:5] == ["python", "-m", "perfkit", "db", "check"]


def test_scaling_and_disruption_are_bounded() -> None:
    """An HPA from 2 replicas and a PDB keeping one: a node drain never takes the last pod."""
    hpa = _one("HorizontalPodAutoscaler", "bill-api")["spec"]
    pdb = _one("PodDisruptionBudget", "bill-api")["spec"]
    assert (hpa["minReplicas"], pdb["minAvailable"]) == (2, 1)
    assert hpa["scaleTargetRef"]["name"] == "bill-api"


def test_compose_migrates_before_anything_serves() -> None:
    """Compose: the API, the relay and the worker wait for the migrate service to succeed."""
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    for name in ("api", "relay", "webhooks"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"
