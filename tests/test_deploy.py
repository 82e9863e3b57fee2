"""deploy/: lint, schema-validate and cross-check the Compose file, the Kubernetes manifests,
the Dockerfile and the Redis configuration, without a container engine.

- every YAML file passes ``yamllint`` (the repository's ``.yamllint``);
- every Kubernetes manifest (and every ConfigMap the kustomizations generate) is valid for
  Kubernetes :data:`K8S_VERSION` in strict mode (``kubernetes-validate``, offline schemas);
- structural facts: warm-up before the workers, the workers' Redis URL names the Redis
  service, one shared data root at one path, probes, resources, the metrics port;
- ``redis.conf`` carries the recommended settings, and a real server starts with it;
- the ACL template's registry users allow exactly ``REGISTRY_COMMANDS`` (the list the fault
  tests found by removing each command in turn), so the two never drift; a server loading
  the rendered ACL serves the registry and ``simulate`` as the deploy files run them.
``docker compose config`` runs only when a working ``docker compose`` exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import redis
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from yamllint import linter
from yamllint.config import YamlLintConfig

from offload_registry.metrics import CanaryCollector, RegistryCollector
from offload_registry.ops.canary import CanaryStats
from offload_registry.store.urls import parse_redis_url
from offload_registry.sync import SessionRegistry
from offload_registry.testing.server import RedisServerProcess, ServerOptions
from redis_fixtures import server_binary_or_fail
from test_cluster_acl import CLUSTER_EXTRA_COMMANDS
from test_redis_faults import REGISTRY_COMMANDS

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
REDIS_DIR = DEPLOY / "redis"
K8S_VERSION = "1.32.0"
"""The Kubernetes version the manifests are validated against (kubernetes-validate ships it)."""
METRICS_PORT = 9464
REGISTRY_USERS = ("registry", "simulate")
OPERATOR_EXTRA_COMMANDS = "+scan +memory|usage +object|idletime"
"""What the operator commands add to the registry's: SCAN (verify's extra copies, stats,
evict --idle-for), MEMORY USAGE (stats, sessions), OBJECT IDLETIME (evict, sessions)."""
PASSWORDS = {
    "REDIS_REGISTRY_PASSWORD": "registry-pw-0123456789",
    "REDIS_SIMULATE_PASSWORD": "simulate-pw-0123456789",
    "REDIS_OPERATOR_PASSWORD": "operator-pw-0123456789",
    "REDIS_ADMIN_PASSWORD": "admin-pw-0123456789abc",
}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomization(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return data


def k8s_resource_files() -> list[Path]:
    """The manifests deploy/k8s/kustomization.yaml lists (folders are other kustomizations)."""
    listed = [K8S / name for name in kustomization(K8S)["resources"]]
    return [path for path in listed if path.suffix == ".yaml"]


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in k8s_resource_files() for doc in load_all(path)]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def generated_config_maps() -> list[dict[str, Any]]:
    """The ConfigMaps the two kustomizations generate, built as kustomize builds them."""
    maps = []
    for folder in (K8S, REDIS_DIR):
        for gen in kustomization(folder).get("configMapGenerator", []):
            data: dict[str, str] = {}
            for name in gen.get("files", []):
                data[Path(name).name] = (folder / name).read_text()
            for literal in gen.get("literals", []):
                key, _, value = literal.partition("=")
                data[key] = value
            maps.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": gen["name"]},
                    "data": data,
                }
            )
    return maps


def generated_config_map(name: str) -> dict[str, str]:
    (found,) = [m["data"] for m in generated_config_maps() if m["metadata"]["name"] == name]
    data: dict[str, str] = found
    return data


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def only_container(obj: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(obj)["containers"]
    result: dict[str, Any] = container
    return result


def env_value(container: dict[str, Any], name: str) -> str:
    (value,) = [e["value"] for e in container.get("env", []) if e["name"] == name]
    text: str = value
    return text


def mount_of_claim(obj: dict[str, Any], claim: str) -> str:
    spec = pod_spec(obj)
    (volume,) = [
        v["name"]
        for v in spec["volumes"]
        if v.get("persistentVolumeClaim", {}).get("claimName") == claim
    ]
    (path,) = [m["mountPath"] for m in only_container(obj)["volumeMounts"] if m["name"] == volume]
    mount: str = path
    return mount


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


_COMPOSE_VAR = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


def interpolate(text: str) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``, with defaults taken
    and the required variables (the passwords) set as the test's own values."""

    def value(match: re.Match[str]) -> str:
        if match["op"] in (":-", "-"):
            return match["arg"]
        return PASSWORDS.get(match["name"], "value-of-" + match["name"])

    return _COMPOSE_VAR.sub(value, text)


def redis_conf() -> dict[str, list[str]]:
    """redis.conf's directives (name -> arguments), comments and blank lines left out."""
    directives: dict[str, list[str]] = {}
    for line in (REDIS_DIR / "redis.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, *args = line.split()
            assert name not in directives, f"redis.conf sets {name} twice"
            directives[name] = args
    return directives


def acl_users(text: str) -> dict[str, list[str]]:
    """user name -> its rules, from an ACL file (template comments skipped)."""
    users: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, name, *rules = line.split()
            assert keyword == "user", line
            users[name] = rules
    return users


def render_acl(
    tmp_path: Path, *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "users.acl"
    environment = {
        "PATH": os.environ["PATH"],
        "ACL_TEMPLATE": str(REDIS_DIR / "users.acl.template"),
        "ACL_FILE": str(out),
        **PASSWORDS,
        **(env or {}),
    }
    return subprocess.run(
        ["sh", str(REDIS_DIR / "render-acl.sh"), "true"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


def memory_bytes(text: str) -> int:
    """A Redis (``768mb``), Compose (``1g``) or Kubernetes (``1Gi``) memory size in bytes,
    every unit read as binary (the larger reading: a stricter check for maxmemory)."""
    match = re.fullmatch(r"(\d+)([kmg]?)(?:i|b)?", text.strip().lower())
    assert match, f"not a memory size: {text!r}"
    return int(match[1]) * 1024 ** " kmg".index(match[2] or " ")


# --------------------------------------------------------------------------------------------
# lint and schemas
# --------------------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml"), ROOT / ".yamllint"])


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_yamllint_finds_no_problem(path: Path) -> None:
    config = YamlLintConfig(file=str(ROOT / ".yamllint"))
    problems = [
        f"{path.relative_to(ROOT)}:{p.line}:{p.column}: {p.level}: {p.message} ({p.rule})"
        for p in linter.run(path.read_text(), config, str(path))
    ]
    assert problems == []


@pytest.mark.parametrize("path", k8s_resource_files(), ids=lambda p: p.name)
def test_every_kubernetes_manifest_is_valid_in_strict_mode(path: Path) -> None:
    documents = load_all(path)
    assert documents, f"{path} holds no manifest"
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


@pytest.mark.parametrize("config_map", generated_config_maps(), ids=lambda m: m["metadata"]["name"])
def test_every_generated_config_map_is_valid_in_strict_mode(config_map: dict[str, Any]) -> None:
    kubernetes_validate.validate(config_map, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    deployment = k8s_object("Deployment", "worker")
    broken = json.loads(json.dumps(deployment))
    only_container(broken)["ports"][0]["containerPort"] = "not-a-port"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    unknown = json.loads(json.dumps(deployment))
    only_container(unknown)["livenesProbe"] = {}  # a typo: strict mode refuses unknown fields
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown, K8S_VERSION, strict=True)


def test_yamllint_reports_a_broken_file() -> None:
    config = YamlLintConfig(file=str(ROOT / ".yamllint"))
    text = (K8S / "worker-pdb.yaml").read_text().replace("  maxUnavailable", " maxUnavailable")
    assert any(p.level == "error" for p in linter.run(text, config, "broken.yaml"))


def test_the_kustomization_lists_every_manifest_and_only_existing_files() -> None:
    listed = kustomization(K8S)["resources"]
    for name in listed:
        target = K8S / name
        assert target.exists(), f"kustomization.yaml lists missing {name}"
        if target.is_dir():
            assert (target / "kustomization.yaml").exists()
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk == {name for name in listed if name.endswith(".yaml")}
    for gen in kustomization(REDIS_DIR)["configMapGenerator"]:
        for name in gen["files"]:
            assert (REDIS_DIR / name).is_file(), name
    # The Redis config has a stable name: the StatefulSet refers to it from another folder.
    assert kustomization(REDIS_DIR)["generatorOptions"]["disableNameSuffixHash"] is True


def test_docker_compose_config_accepts_the_compose_file(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on this machine")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False, timeout=30
    )
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[0][:200]
        pytest.skip(f"`docker compose` does not work here: {reason}")
    result = subprocess.run(
        [docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        env={**os.environ, **PASSWORDS},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------
# Compose
# --------------------------------------------------------------------------------------------


def test_compose_warms_up_once_redis_is_healthy_and_before_any_worker() -> None:
    services = compose()["services"]
    assert services["warm"]["command"] == ["warm", "--json"]  # CONTRACT.md's syntax
    assert services["warm"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["warm"]["restart"] == "no"
    assert services["worker"]["depends_on"]["warm"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert int(interpolate(str(services["worker"]["deploy"]["replicas"]))) > 1


def test_compose_workers_and_warm_up_use_the_redis_service_with_their_acl_users() -> None:
    services = compose()["services"]
    for name, user in (("warm", "registry"), ("worker", "registry")):
        url = interpolate(services[name]["environment"]["OFFLOAD_REGISTRY_REDIS_URL"])
        target = parse_redis_url(url)
        assert target.scheme == "redis"
        assert [tuple(h) for h in target.hosts] == [("redis", 6379)]
        assert target.username == user
        assert target.password == PASSWORDS[f"REDIS_{user.upper()}_PASSWORD"]
    assert services["redis"]["image"].startswith("redis:")


def test_compose_shares_one_data_root_volume_at_the_data_root_path() -> None:
    spec = compose()
    services = spec["services"]
    mounts = {}
    for name in ("warm", "worker"):
        env = services[name]["environment"]
        (mount,) = [v for v in services[name]["volumes"] if v.startswith("offload-data:")]
        mounts[name] = mount
        assert mount.split(":")[1] == env["OFFLOAD_REGISTRY_DATA_ROOT"]
    assert mounts["warm"] == mounts["worker"]
    assert "offload-data" in spec["volumes"]
    assert services["worker"]["command"][0] == "canary"  # long-lived, on the mounted root
    assert services["worker"]["restart"] == "unless-stopped"


def test_compose_redis_runs_the_shared_config_files_with_a_healthcheck() -> None:
    redis_service = compose()["services"]["redis"]
    mounted = {}
    for volume in redis_service["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            assert (DEPLOY / source).is_file(), source
            mounted[Path(source).name] = target
    assert set(mounted) == {"redis.conf", "users.acl.template", "render-acl.sh"}
    command = redis_service["command"]
    assert command[:2] == ["sh", mounted["render-acl.sh"]]
    assert command[2:] == ["redis-server", mounted["redis.conf"]]
    assert redis_service["user"] != "root"
    aclfile = redis_conf()["aclfile"][0]
    assert any(aclfile.startswith(t.split(":")[0] + "/") for t in redis_service["tmpfs"])
    assert "--user registry" in " ".join(redis_service["healthcheck"]["test"])
    limit = memory_bytes(redis_service["deploy"]["resources"]["limits"]["memory"])
    assert memory_bytes(redis_conf()["maxmemory"][0]) <= 0.8 * limit
    for name in ("warm", "worker"):
        assert compose()["services"][name]["build"]["dockerfile"] == "deploy/Dockerfile"


# --------------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------------


def test_workers_and_warm_up_share_the_read_write_many_data_root_at_one_path() -> None:
    claim = k8s_object("PersistentVolumeClaim", "offload-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    data_root = generated_config_map("offload-registry-env")["OFFLOAD_REGISTRY_DATA_ROOT"]
    for obj in (k8s_object("Deployment", "worker"), k8s_object("Job", "warm")):
        assert mount_of_claim(obj, "offload-data") == data_root
        refs = [e["configMapRef"]["name"] for e in only_container(obj)["envFrom"]]
        assert refs == ["offload-registry-env"]


def test_the_warm_up_is_a_job_running_the_contract_command() -> None:
    job = k8s_object("Job", "warm")
    assert only_container(job)["args"] == ["warm", "--json"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert job["spec"]["ttlSecondsAfterFinished"] > 0


def test_kubernetes_clients_reach_the_redis_service_as_their_acl_users() -> None:
    service = k8s_object("Service", "redis")
    (port,) = service["spec"]["ports"]
    statefulset = k8s_object("StatefulSet", "redis")
    container_ports = {p["name"]: p["containerPort"] for p in only_container(statefulset)["ports"]}
    assert container_ports[port["targetPort"]] == 6379
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    for obj, user in (
        (k8s_object("Job", "warm"), "registry"),
        (k8s_object("Deployment", "worker"), "registry"),
    ):
        container = only_container(obj)
        url = env_value(container, "OFFLOAD_REGISTRY_REDIS_URL")
        password_var = f"REDIS_{user.upper()}_PASSWORD"
        # Kubernetes expands $(VAR) only from variables defined earlier in the list.
        names = [e["name"] for e in container["env"]]
        assert names.index(password_var) < names.index("OFFLOAD_REGISTRY_REDIS_URL")
        target = parse_redis_url(url.replace(f"$({password_var})", "pw"))
        assert [tuple(h) for h in target.hosts] == [(service["metadata"]["name"], port["port"])]
        assert target.username == user


def test_workers_expose_the_metrics_port_for_prometheus() -> None:
    deployment = k8s_object("Deployment", "worker")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    container = only_container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == METRICS_PORT
    assert env_value(container, "OFFLOAD_REGISTRY_METRICS_PORT") == str(METRICS_PORT)
    assert container["args"][0] == "canary"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_compose_workers_serve_metrics_and_are_probed_on_them() -> None:
    worker = compose()["services"]["worker"]
    assert worker["environment"]["OFFLOAD_REGISTRY_METRICS_PORT"] == str(METRICS_PORT)
    assert str(METRICS_PORT) in worker["expose"]
    probe = " ".join(worker["healthcheck"]["test"])
    assert f"http://127.0.0.1:{METRICS_PORT}/metrics" in probe


@pytest.mark.parametrize(
    ("kind", "name"), [("Deployment", "worker"), ("StatefulSet", "redis"), ("Job", "warm")]
)
def test_every_container_has_resources_and_runs_unprivileged(kind: str, name: str) -> None:
    obj = k8s_object(kind, name)
    container = only_container(obj)
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][bound].keys()
    assert pod_spec(obj)["securityContext"]["runAsNonRoot"] is True
    assert pod_spec(obj)["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    if kind != "Job":
        assert {"readinessProbe", "livenessProbe"} <= container.keys()


def test_the_disruption_budget_covers_the_worker_pods() -> None:
    budget = k8s_object("PodDisruptionBudget", "worker")
    deployment = k8s_object("Deployment", "worker")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]


def test_redis_statefulset_runs_the_generated_config_and_the_secret_passwords() -> None:
    statefulset = k8s_object("StatefulSet", "redis")
    container = only_container(statefulset)
    (config,) = [v for v in pod_spec(statefulset)["volumes"] if "configMap" in v]
    assert config["configMap"]["name"] == "redis-config"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == config["name"]]
    files = generated_config_map("redis-config")
    assert container["command"] == [
        "sh",
        f"{mount['mountPath']}/render-acl.sh",
        "redis-server",
        f"{mount['mountPath']}/redis.conf",
    ]
    assert files["redis.conf"] == (REDIS_DIR / "redis.conf").read_text()
    secret_vars = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert secret_vars == set(PASSWORDS)
    aclfile = redis_conf()["aclfile"][0]
    assert any(aclfile.startswith(m["mountPath"] + "/") for m in container["volumeMounts"])
    limit = memory_bytes(container["resources"]["limits"]["memory"])
    assert memory_bytes(redis_conf()["maxmemory"][0]) <= 0.8 * limit
    assert (
        statefulset["spec"]["serviceName"]
        == k8s_object("Service", "redis-headless")["metadata"]["name"]
    )


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_installs_the_package_and_runs_the_console_script_unprivileged() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    (entrypoint,) = [arg for op, arg in instructions if op == "ENTRYPOINT"]
    script = re.search(
        r"^(\S+)\s*=",
        (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1].strip(),
        re.M,
    )
    assert script is not None
    assert json.loads(entrypoint) == [script[1]] == ["offload-registry"]
    # The image has the metrics extra: the deployed workers serve Prometheus metrics.
    assert any(op == "RUN" and 'pip install ".[metrics]"' in arg for op, arg in instructions)
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    for op, arg in instructions:
        if op == "COPY":
            *sources, _dest = arg.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


# --------------------------------------------------------------------------------------------
# redis.conf and the ACL
# --------------------------------------------------------------------------------------------


def test_redis_conf_has_the_recommended_settings() -> None:
    conf = redis_conf()
    assert conf["maxmemory-policy"] == ["allkeys-lru"]
    assert memory_bytes(conf["maxmemory"][0]) > 0
    assert conf["appendonly"] == ["no"]
    assert conf["save"] == ['""']
    assert conf["aclfile"] == ["/run/redis/users.acl"]
    text = (REDIS_DIR / "redis.conf").read_text()
    assert "# appendonly yes" in text and "# appendfsync everysec" in text


def test_the_acl_gives_the_registry_users_exactly_the_registry_commands() -> None:
    users = acl_users((REDIS_DIR / "users.acl.template").read_text())
    wanted = set(REGISTRY_COMMANDS.split())
    for user in REGISTRY_USERS:
        rules = users[user]
        assert "-@all" in rules and rules.index("-@all") < min(
            i for i, r in enumerate(rules) if r.startswith("+")
        )
        granted = {r for r in rules if r.startswith("+")}
        assert granted == wanted, (
            f"user {user}: missing {sorted(wanted - granted)}, extra {sorted(granted - wanted)}"
        )
        assert "on" in rules and "resetchannels" in rules and "resetkeys" in rules
        assert not any(r in ("~*", "&*", "allkeys", "allchannels", "nopass") for r in rules)
    assert users["registry"].count("~@KEY_PREFIX@:*") == 1
    assert users["registry"].count("&@KEY_PREFIX@:*") == 1
    assert [r for r in users["registry"] if r[0] in "~&%"] == ["~@KEY_PREFIX@:*", "&@KEY_PREFIX@:*"]
    assert [r for r in users["simulate"] if r[0] in "~&%"] == [
        "~@KEY_PREFIX@-sim*",
        "&@KEY_PREFIX@-sim*",
    ]
    assert "off" in users["default"] and "-@all" in users["default"]


def test_the_acl_gives_the_operator_the_registry_commands_plus_scan_and_measuring() -> None:
    users = acl_users((REDIS_DIR / "users.acl.template").read_text())
    rules = users["operator"]
    granted = {r for r in rules if r.startswith("+")}
    assert granted == set(REGISTRY_COMMANDS.split()) | set(OPERATOR_EXTRA_COMMANDS.split())
    assert rules.index("-@all") < min(i for i, r in enumerate(rules) if r.startswith("+"))
    assert [r for r in rules if r[0] in "~&%"] == ["~@KEY_PREFIX@:*", "&@KEY_PREFIX@:*"]
    assert "on" in rules and "resetchannels" in rules and "resetkeys" in rules


def test_the_acl_templates_commented_cluster_variant_adds_exactly_the_cluster_commands() -> None:
    text = (REDIS_DIR / "users.acl.template").read_text()
    commented = [line.lstrip("# ") for line in text.splitlines() if line.startswith("# user ")]
    variant = acl_users("\n".join(commented))["registry"]
    plain = acl_users(text)["registry"]
    wanted = set(REGISTRY_COMMANDS.split()) | set(CLUSTER_EXTRA_COMMANDS.split())
    assert {r for r in variant if r.startswith("+")} == wanted
    assert [r for r in variant if not r.startswith("+")] == [
        r for r in plain if not r.startswith("+")
    ]
    assert all(line.startswith("#") for line in text.splitlines() if "+asking" in line)


def test_render_acl_refuses_missing_short_or_unsafe_passwords(tmp_path: Path) -> None:
    for bad in (
        "",
        "short",
        "CHANGE-ME-please-please",
        "has space in it 123",
        "with/slash/0123456789",
    ):
        result = render_acl(tmp_path, env={"REDIS_REGISTRY_PASSWORD": bad})
        assert result.returncode != 0, bad
        assert "REDIS_REGISTRY_PASSWORD" in result.stderr
    assert render_acl(tmp_path, env={"OFFLOAD_REGISTRY_KEY_PREFIX": "a*b"}).returncode != 0


@pytest.fixture
def deploy_redis(tmp_path: Path) -> Iterator[RedisServerProcess]:
    """A real server with deploy/redis/redis.conf's directives and the rendered ACL file."""
    rendered = render_acl(tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    acl = (tmp_path / "users.acl").read_text()
    assert re.search(r"@[A-Z_]+@", acl) is None
    assert "#" not in acl and PASSWORDS["REDIS_REGISTRY_PASSWORD"] in acl
    # The test's own bind, port and paths; every other directive as deploy/ has it.
    local = {"bind", "port", "dir", "aclfile", "protected-mode"}
    extra = []
    for name, args in redis_conf().items():
        if name not in local:
            extra += [f"--{name}", *("" if a == '""' else a for a in args)]
    options = ServerOptions(aclfile=tmp_path / "users.acl", extra_args=extra)
    with RedisServerProcess(options, binary=server_binary_or_fail()) as server:
        yield server


def test_a_server_with_the_deploy_config_serves_the_registry_user_only_its_prefix(
    deploy_redis: RedisServerProcess, tmp_path: Path
) -> None:
    port = deploy_redis.port
    password = PASSWORDS["REDIS_REGISTRY_PASSWORD"]
    url = f"redis://registry:{password}@127.0.0.1:{port}/0"
    with SessionRegistry(tmp_path / "root", redis_url=url, key_prefix="offload-registry") as reg:
        manager = reg.resolve("agent:main:s1").manager
        manager.append_entries([{"tool_call_id": "call_1", "summary": "s"}])
        assert manager.claim(["call_2"]) == ["call_2"]
    with SessionRegistry(tmp_path / "root", redis_url=url, key_prefix="offload-registry") as again:
        fresh = again.resolve("agent:main:s1").manager
        assert fresh.source == "redis"
        assert {"call_1", "call_2"} <= set(fresh.processed_tool_call_ids)
    admin = redis.Redis(port=port, username="admin", password=PASSWORDS["REDIS_ADMIN_PASSWORD"])
    registry = redis.Redis(port=port, username="registry", password=password)
    anonymous = redis.Redis(port=port)
    try:
        assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        with pytest.raises(redis.exceptions.NoPermissionError):
            registry.get("someone-else:key")
        with pytest.raises(redis.exceptions.NoPermissionError):
            registry.flushall()
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.get("offload-registry:x")
    finally:
        for client in (admin, registry, anonymous):
            client.close()


def _as_user(user: str, port: int, db: int = 0) -> str:
    password = PASSWORDS[f"REDIS_{user.upper()}_PASSWORD"]
    return f"redis://{user}:{password}@127.0.0.1:{port}/{db}"


def _ops(root: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "offload_registry.cli.main", "--data-root", str(root)),
            *("--redis-url", url, "--key-prefix", "offload-registry", *args),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_operator_user_runs_every_operator_command_and_the_worker_user_cannot_scan(
    deploy_redis: RedisServerProcess, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "main").mkdir(parents=True)
    (root / "main" / "offload-s1.jsonl").write_text('{"tool_call_id":"c1","summary":"s"}\n')
    operator = _as_user("operator", deploy_redis.port)
    for args in (
        ["warm"],
        ["verify"],
        ["verify", "--repair"],
        ["stats"],
        ["sessions"],
        ["evict", "--idle-for", "1h"],
        ["evict", "agent:main:s1"],
    ):
        done = _ops(root, operator, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    admin = redis.Redis(
        port=deploy_redis.port, username="admin", password=PASSWORDS["REDIS_ADMIN_PASSWORD"]
    )
    try:
        denied = {e["object"] for e in admin.acl_log()}
    finally:
        admin.close()
    assert denied <= {"config|get", "client|setinfo"}, denied
    # why the operator user exists: the least-privilege worker user cannot SCAN
    done = _ops(root, _as_user("registry", deploy_redis.port), "stats")
    assert done.returncode != 0 and "scan" in done.stderr.lower()


@pytest.mark.parametrize("user", ["registry", "operator"])
def test_the_acl_users_can_use_a_database_other_than_0(
    deploy_redis: RedisServerProcess, tmp_path: Path, user: str
) -> None:
    url = _as_user(user, deploy_redis.port, db=3)
    with SessionRegistry(tmp_path / "root", redis_url=url, key_prefix="offload-registry") as reg:
        manager = reg.resolve("agent:main:s1").manager
        manager.append_entries([{"tool_call_id": "call_1", "summary": "s"}])
    with SessionRegistry(tmp_path / "root", redis_url=url, key_prefix="offload-registry") as again:
        assert again.resolve("agent:main:s1").manager.source == "redis"
    admin = redis.Redis(
        port=deploy_redis.port, db=3, username="admin", password=PASSWORDS["REDIS_ADMIN_PASSWORD"]
    )
    try:
        assert admin.dbsize() > 0  # the data went to database 3
    finally:
        admin.close()


def _scrape(port: int) -> dict[str, float]:
    """``name -> value`` of the unlabelled samples at ``127.0.0.1:port/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def _wait_for_rounds(port: int, process: subprocess.Popen[str], rounds: int) -> dict[str, float]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the worker exited: " + process.communicate()[1][-2000:]
        try:
            samples = _scrape(port)
        except OSError:  # not listening yet
            samples = {}
        if samples.get("offload_registry_canary_rounds_total", 0) >= rounds:
            return samples
        time.sleep(0.2)
    raise AssertionError(f"the worker did not run {rounds} rounds within 60 s")


def test_the_deploy_worker_command_is_long_lived_writes_the_mounted_root_and_serves_metrics(
    deploy_redis: RedisServerProcess, tmp_path: Path
) -> None:
    worker = compose()["services"]["worker"]
    environment = {k: interpolate(str(v)) for k, v in worker["environment"].items()}
    url = environment["OFFLOAD_REGISTRY_REDIS_URL"].replace(
        "@redis:6379", f"@127.0.0.1:{deploy_redis.port}"
    )
    mounted = tmp_path / "data"  # what compose mounts at OFFLOAD_REGISTRY_DATA_ROOT
    mounted.mkdir()
    port = free_port()
    env = {
        **os.environ,
        **environment,
        "OFFLOAD_REGISTRY_DATA_ROOT": str(mounted),
        "OFFLOAD_REGISTRY_REDIS_URL": url,
        "OFFLOAD_REGISTRY_METRICS_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "offload_registry.cli.main", *worker["command"]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        samples = _wait_for_rounds(port, process, rounds=3)
        assert samples["offload_registry_canary_violations_total"] == 0
        assert samples["offload_registry_canary_checks_total"] > 0
        assert samples["offload_registry_redis_errors_total"] == 0  # it used the Redis given
        journals = list((mounted / "offload-canary").glob("offload-*.jsonl"))
        assert journals, "the worker wrote nothing under the mounted data root"
        assert process.poll() is None  # long-lived: still running after its rounds
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr[-2000:]
    assert "0 violations" in stdout and "Traceback" not in stderr
    keys = redis.Redis(
        port=deploy_redis.port,
        username="admin",
        password=PASSWORDS["REDIS_ADMIN_PASSWORD"],
    )
    try:
        # What it wrote to Redis expires by itself (the tier's idle TTL).
        state_keys = list(keys.scan_iter("offload-registry:*:state"))
        assert state_keys and all(keys.pttl(k) > 0 for k in state_keys)
    finally:
        keys.close()


def test_the_deploy_warm_command_loads_the_journals_as_the_registry_user(
    deploy_redis: RedisServerProcess, tmp_path: Path
) -> None:
    command = compose()["services"]["warm"]["command"]
    root = tmp_path / "root"
    with SessionRegistry(root) as journal_only:
        manager = journal_only.resolve("agent:main:s1").manager
        manager.append_entries([{"tool_call_id": "call_1", "summary": "s"}])
    password = PASSWORDS["REDIS_REGISTRY_PASSWORD"]
    env = {
        **os.environ,
        "OFFLOAD_REGISTRY_DATA_ROOT": str(root),
        "OFFLOAD_REGISTRY_REDIS_URL": f"redis://registry:{password}@127.0.0.1:{deploy_redis.port}/0",
        "OFFLOAD_REGISTRY_KEY_PREFIX": "offload-registry",
    }
    result = subprocess.run(
        [sys.executable, "-m", "offload_registry.cli.main", *command],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["sessions"] == 1 and summary["entries"] >= 1 and "seconds" in summary


# --------------------------------------------------------------------------------------------
# Grafana
# --------------------------------------------------------------------------------------------


def exported_metric_names(tmp_path: Path) -> set[str]:
    """Every sample name a canary worker's /metrics serves (with a Redis tier's counters)."""
    collectors = CollectorRegistry(auto_describe=True)
    with SessionRegistry(tmp_path, redis_url="memory://") as registry:
        collectors.register(RegistryCollector(registry))
        collectors.register(CanaryCollector(CanaryStats()))
        registry.resolve("agent:main:s1")  # labelled families have samples once used
        text = generate_latest(collectors).decode()
    return {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_the_grafana_dashboard_queries_only_metrics_the_workers_export(tmp_path: Path) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "offload-registry.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queried = {name for expr in exprs for name in re.findall(r"offload_registry_\w+", expr)}
    exported = exported_metric_names(tmp_path)
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, sorted(queried - exported)
    assert "offload_registry_canary_violations_total" in queried
