"""The deployment files in docker/ agree with the code: ports, probe paths, model names, the admin-key variable,
and `larr serve` / `larr export` arguments parsed by the real parser of larr/cli.py.

No container engine runs on the development machines, so this parsing is all the checking the image and the
manifests get here (docker/README.md says how to run them).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from argparse import Namespace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from larr.cli import build_parser
from larr.export.options import REPOSITORY_MODELS
from larr.serving.server.options import (
    ADMIN_KEY_ENV,
    DEFAULT_GRPC_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_METRICS_PORT,
    DEFAULT_SUPERVISOR_PORT,
    HEALTH_LIVE_PATH,
    HEALTH_READY_PATH,
)
from larr.serving.stores.factory import StoreKind

DOCKER = Path(__file__).resolve().parents[2] / "docker"
K8S = DOCKER / "k8s"
# The metrics port of the stub supervisor in `larr serve` (larr_stub_restarts_total, larr_degraded).
SUPERVISOR_PORT = DEFAULT_SUPERVISOR_PORT
REDIS_PORT = 6379  # Redis's own default, in the export URL and both manifests
CONTAINER_HOST = "0.0.0.0"
REPLICA_PORTS = {
    "http": DEFAULT_HTTP_PORT,
    "grpc": DEFAULT_GRPC_PORT,
    "metrics": DEFAULT_METRICS_PORT,
    "supervisor": SUPERVISOR_PORT,
}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def _parse(command: str, args: list[str]) -> Namespace:
    """``larr <command> <args>`` through the real parser; a flag it does not know fails the test by name."""
    try:
        return build_parser().parse_args([command, *args])
    except SystemExit:
        pytest.fail(f"`larr {command}` rejects the manifest's arguments {args} (see the error above)")


def _dockerfile_instruction(name: str) -> str:
    lines = [line for line in (DOCKER / "Dockerfile").read_text(encoding="utf-8").splitlines() if line.startswith(name)]
    assert len(lines) == 1, f"docker/Dockerfile has {len(lines)} {name} lines"
    return lines[0][len(name):].strip()


def _entrypoint() -> list[str]:
    return json.loads(_dockerfile_instruction("ENTRYPOINT"))


def _serve_args(args: list[str]) -> Namespace:
    """The image's entrypoint (`larr serve`) plus a manifest's arguments, parsed."""
    entrypoint = _entrypoint()
    assert entrypoint[0] == "larr"
    return _parse(entrypoint[1], [*entrypoint[2:], *args])


def _check_serve_args(args: list[str]) -> Namespace:
    parsed = _serve_args(args)
    assert parsed.host == CONTAINER_HOST  # loopback would be unreachable from outside the container
    assert (parsed.http_port, parsed.grpc_port, parsed.metrics_port) == (
        DEFAULT_HTTP_PORT, DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT
    )
    # The key comes from the environment: on the command line it would show in `ps`.
    assert parsed.admin_key is None
    return parsed


def test_manifest_checks_reject_a_flag_larr_serve_does_not_have() -> None:
    with pytest.raises(pytest.fail.Exception, match="rejects"):
        _serve_args(["--grpc-portt", "8001"])


# ------------------------------------------------------------------------------------------------
# docker/Dockerfile


def test_dockerfile_runs_larr_serve_on_all_interfaces_and_exposes_the_replica_ports() -> None:
    assert _entrypoint() == ["larr", "serve"]
    parsed = _check_serve_args(json.loads(_dockerfile_instruction("CMD")))
    assert parsed.model_repository == Path("/models")
    assert {int(port) for port in _dockerfile_instruction("EXPOSE").split()} == set(REPLICA_PORTS.values())


def test_dockerfile_copies_every_package_folder_pip_installs() -> None:
    # pyproject's package-dir maps larr.X to folder X; a folder the image lacks fails `pip install .`.
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    pyproject = (DOCKER.parent / "pyproject.toml").read_text(encoding="utf-8")
    package_dir = re.search(r"^package-dir = \{(.*)\}$", pyproject, re.MULTILINE)
    assert package_dir is not None
    folders = set(re.findall(r'= "(\w+)"', package_dir.group(1)))
    copied = set(re.findall(r"^COPY (\w+) \./\1$", text, re.MULTILINE))
    assert folders <= copied, f"docker/Dockerfile does not COPY {sorted(folders - copied)}"


# ------------------------------------------------------------------------------------------------
# docker/compose.yaml and docker/prometheus.yml


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load(DOCKER / "compose.yaml")


def _replicas(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    # A replica is a service of the larr image (the x-larr-replica anchor).
    image = compose["x-larr-replica"]["image"]
    return {name: service for name, service in compose["services"].items() if service.get("image") == image}


def test_compose_runs_several_replicas_of_larr_serve(compose: dict[str, Any]) -> None:
    replicas = _replicas(compose)
    assert len(replicas) >= 2
    for name, service in replicas.items():
        parsed = _check_serve_args(service["command"])
        source, target, mode = service["volumes"][0].rsplit(":", 2)
        assert (Path(target), mode) == (parsed.model_repository, "ro"), name
        assert {int(port) for port in service["expose"]} == set(REPLICA_PORTS.values()), name
        published = {int(mapping.rsplit(":", 1)[1]) for mapping in service["ports"]}
        assert published <= set(REPLICA_PORTS.values()), name
        assert DEFAULT_GRPC_PORT in published, name


def test_compose_passes_the_admin_key_through_the_environment(compose: dict[str, Any]) -> None:
    for name, service in _replicas(compose).items():
        value = service["environment"][ADMIN_KEY_ENV]
        # Interpolated from the operator's environment at `docker compose up`, never a key in the file.
        assert re.fullmatch(r"\$\{" + ADMIN_KEY_ENV + r":\?[^}]+\}", value), (name, value)


def test_compose_healthcheck_asks_tritons_readiness(compose: dict[str, Any]) -> None:
    for name, service in _replicas(compose).items():
        assert f":{DEFAULT_HTTP_PORT}{HEALTH_READY_PATH}'" in " ".join(service["healthcheck"]["test"]), name


def test_compose_redis_is_a_bounded_lru(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].split(":")[0] == "redis" and redis["image"].split(":")[1].startswith("7")
    command = redis["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert command[command.index("--maxmemory") + 1]
    assert [int(port) for port in redis["expose"]] == [REDIS_PORT]


def test_compose_export_command_points_the_repository_at_the_redis_service(compose: dict[str, Any]) -> None:
    command = compose["x-larr-export"]
    assert command[:2] == ["larr", "export"]
    parsed = _parse(command[1], command[2:])
    assert parsed.scene_store == StoreKind.REDIS.value
    url = urlparse(parsed.redis_url)
    assert url.scheme == "redis" and url.hostname in compose["services"] and url.port == REDIS_PORT
    assert url.hostname == "redis"
    # The Kubernetes Service of the same name makes the same export work in the cluster.
    services = [doc for doc in _load_all(K8S / "redis.yaml") if doc["kind"] == "Service"]
    assert [s["metadata"]["name"] for s in services] == [url.hostname]
    assert [p["port"] for p in services[0]["spec"]["ports"]] == [REDIS_PORT]


def test_prometheus_scrapes_triton_and_the_supervisor_of_every_replica(compose: dict[str, Any]) -> None:
    config = _load(DOCKER / "prometheus.yml")
    targets = {
        target
        for job in config["scrape_configs"]
        if job.get("metrics_path", "/metrics") == "/metrics"
        for static in job["static_configs"]
        for target in static["targets"]
    }
    expected = {f"{name}:{port}" for name in _replicas(compose) for port in (DEFAULT_METRICS_PORT, SUPERVISOR_PORT)}
    assert targets == expected
    mount = compose["services"]["prometheus"]["volumes"][0]
    assert mount.split(":")[0] == "./prometheus.yml"


# ------------------------------------------------------------------------------------------------
# docker/k8s


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object in docker/k8s, by (kind, name)."""
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in _load_all(path):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def _container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return container


def _named_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return number


def test_kustomization_applies_every_manifest_but_the_loader_pod() -> None:
    resources = _load(K8S / "kustomization.yaml")["resources"]
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "model-repository-loader.yaml"}
    assert sorted(resources) == sorted(on_disk)


def test_deployment_runs_larr_serve_with_the_replica_ports(k8s: dict) -> None:
    deployment = k8s[("Deployment", "larr")]
    assert deployment["spec"]["replicas"] >= 2
    triton = _container(deployment, "triton")
    assert "command" not in triton  # the image's entrypoint, `larr serve`
    parsed = _check_serve_args(triton["args"])
    assert {p["name"]: p["containerPort"] for p in triton["ports"]} == REPLICA_PORTS
    mounts = {m["name"]: m for m in triton["volumeMounts"]}
    assert Path(mounts["model-repository"]["mountPath"]) == parsed.model_repository
    assert mounts["model-repository"]["readOnly"] is True
    assert triton["resources"]["requests"] and triton["resources"]["limits"]


def test_deployment_probes_use_tritons_health_endpoints(k8s: dict) -> None:
    triton = _container(k8s[("Deployment", "larr")], "triton")
    for probe, path in (("livenessProbe", HEALTH_LIVE_PATH), ("readinessProbe", HEALTH_READY_PATH),
                        ("startupProbe", HEALTH_LIVE_PATH)):
        get = triton[probe]["httpGet"]
        assert (get["path"], _named_port(triton, get["port"])) == (path, DEFAULT_HTTP_PORT), probe


def test_deployment_takes_the_admin_key_from_a_secret(k8s: dict) -> None:
    triton = _container(k8s[("Deployment", "larr")], "triton")
    (variable,) = [e for e in triton["env"] if e["name"] == ADMIN_KEY_ENV]
    assert "value" not in variable and set(variable["valueFrom"]["secretKeyRef"]) == {"name", "key"}


def test_deployment_mounts_the_model_repository_claim(k8s: dict) -> None:
    pod = k8s[("Deployment", "larr")]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["model-repository"]["persistentVolumeClaim"]
    assert claim["readOnly"] is True
    assert ("PersistentVolumeClaim", claim["claimName"]) in k8s
    loader = k8s[("Pod", "larr-model-repository-loader")]["spec"]["volumes"][0]["persistentVolumeClaim"]
    assert loader["claimName"] == claim["claimName"]


def test_init_container_requires_every_model_larr_export_writes(k8s: dict, tmp_path: Path) -> None:
    (init,) = k8s[("Deployment", "larr")]["spec"]["template"]["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"]}
    assert tuple(env["LARR_REQUIRED_MODELS"].split()) == REPOSITORY_MODELS
    # Run its script against a stand-in for the mounted volume: it must refuse a repository missing a model.
    script = init["command"][-1].replace("/models", str(tmp_path))
    run_env = {"PATH": os.environ["PATH"], **env}
    for model in REPOSITORY_MODELS[:-1]:
        (tmp_path / model).mkdir()
        (tmp_path / model / "config.pbtxt").write_text("", encoding="utf-8")
    missing = subprocess.run(["sh", "-c", script], env=run_env, capture_output=True, text=True, check=False)
    assert missing.returncode == 1 and f"{REPOSITORY_MODELS[-1]}/config.pbtxt is missing" in missing.stdout
    (tmp_path / REPOSITORY_MODELS[-1]).mkdir()
    (tmp_path / REPOSITORY_MODELS[-1] / "config.pbtxt").write_text("", encoding="utf-8")
    assert subprocess.run(["sh", "-c", script], env=run_env, check=False).returncode == 0


def test_service_exposes_grpc_http_and_metrics_of_the_replicas(k8s: dict) -> None:
    deployment = k8s[("Deployment", "larr")]
    service = k8s[("Service", "larr")]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    triton = _container(deployment, "triton")
    ports = {p["name"]: (p["port"], _named_port(triton, p["targetPort"])) for p in service["spec"]["ports"]}
    assert ports == {name: (port, port) for name, port in REPLICA_PORTS.items()}


def test_k8s_redis_is_a_bounded_lru_behind_its_service(k8s: dict) -> None:
    deployment = k8s[("Deployment", "redis")]
    (redis,) = deployment["spec"]["template"]["spec"]["containers"]
    assert redis["image"].split(":")[0] == "redis" and redis["image"].split(":")[1].startswith("7")
    args = redis["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "allkeys-lru" and args[args.index("--maxmemory") + 1]
    service = k8s[("Service", "redis")]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert _named_port(redis, port["targetPort"]) == port["port"] == REDIS_PORT
