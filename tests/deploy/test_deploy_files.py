"""Checks of the deployment files: Dockerfile, docker-compose.yml and deploy/k8s/.

No Docker engine or cluster is needed:

- ``docker-compose config`` (docker-compose 1.29.2, installed into ``.venv-compose`` by
  ``make deploy-tools``) validates the compose file against its schema;
- ``kubernetes-validate`` checks every manifest against the Kubernetes OpenAPI schemas in
  strict mode (unknown fields are errors);
- the Dockerfile is parsed and checked for its structure;
- every ``pixelbatch`` command these files run must exist in the CLI.

A missing validator fails the tests with the command that installs it; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
K8S_DIR = ROOT / "deploy" / "k8s"
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"

INSTALL_HINT = "run `make deploy-tools` (or `pip install -e '.[deploy-tools]'`)"
APP_SERVICES = ("migrate", "api", "worker", "flower")
# Dummy values for the variables docker-compose.yml requires (`${VAR:?...}`).
COMPOSE_REQUIRED_ENV = {
    "POSTGRES_PASSWORD": "dummy-password",
    "PIXELBATCH_WEBHOOK_SECRET": "whsec_ZHVtbXktc2VjcmV0LWZvci10ZXN0cw==",
    "PIXELBATCH_SECRET_KEY": "dummy-secret-key",
    "GRAFANA_ADMIN_PASSWORD": "dummy-grafana-password",
    "MINIO_ROOT_USER": "dummy-user",
    "MINIO_ROOT_PASSWORD": "dummy-password",
}
# Kubernetes versions the manifests must be valid for: a floor, and the newest schema
# that kubernetes-validate ships (added at run time).
K8S_VERSIONS = ("1.31",)


# --------------------------------------------------------------------------- helpers


def _load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def _k8s_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p.name != KUSTOMIZATION.name)


def _k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in _k8s_files() for doc in _load_yaml_docs(path)]


def _k8s_object(kind: str, name: str) -> dict[str, Any]:
    for obj in _k8s_objects():
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind} named {name!r} in {K8S_DIR}")


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in _k8s_objects():
        if obj["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _pvc_mounts(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """mountPath -> claimName for the container's PVC mounts."""
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod.get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    return {
        m["mountPath"]: claims[m["name"]]
        for m in container.get("volumeMounts", [])
        if m["name"] in claims
    }


def _kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail(f"kubernetes-validate is not installed: {INSTALL_HINT}")
    return kubernetes_validate


def _docker_compose() -> str:
    """The docker-compose executable: $PIXELBATCH_DOCKER_COMPOSE, .venv-compose, or PATH."""
    candidates = [
        os.environ.get("PIXELBATCH_DOCKER_COMPOSE", ""),
        str(ROOT / ".venv-compose" / "bin" / "docker-compose"),
        shutil.which("docker-compose") or "",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "docker-compose not found (looked at $PIXELBATCH_DOCKER_COMPOSE, "
        f"{ROOT / '.venv-compose/bin/docker-compose'} and PATH): run `make deploy-tools`, "
        "which installs docker-compose==1.29.2 into .venv-compose"
    )


def _run_compose_config(
    env: dict[str, str], env_file: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    # A clean environment and an explicit --env-file: a developer's own .env or
    # COMPOSE_* variables must not change what is validated.
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(
        [
            _docker_compose(),
            "--env-file",
            str(env_file),
            "--file",
            str(COMPOSE_FILE),
            "--project-directory",
            str(ROOT),
            "config",
            *extra,
        ],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's volumes, in short (v1) or long (v2) syntax."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        mounts[target] = source
    return mounts


def _healthcheck_enabled(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck")
    if not check or check.get("disable"):
        return False
    test = check.get("test")
    return bool(test) and test != ["NONE"]


def _as_list(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _default_chunk_time_limit() -> float:
    """The code's default hard time limit of one chunk (Celery task_time_limit), in s."""
    from pixelbatch.settings import Settings

    field = Settings.model_fields.get("chunk_time_limit")
    assert field is not None, "Settings.chunk_time_limit is gone: update the deploy files"
    return float(field.default)


def _duration_seconds(value: str | int | float) -> float:
    """A compose duration (`90s`, `2m`, `1m30s`, `1h`) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", str(value))
    assert parts, f"not a duration: {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


# --------------------------------------------------------------------------- Dockerfile


class Instruction:
    def __init__(self, keyword: str, args: str) -> None:
        self.keyword = keyword
        self.args = args

    def __repr__(self) -> str:
        return f"{self.keyword} {self.args}"


def _parse_dockerfile(text: str) -> tuple[dict[str, str], list[list[Instruction]]]:
    """Global ARG defaults, and the instructions of each stage (split on FROM)."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current:
        logical.append(current)

    global_args: dict[str, str] = {}
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([instruction])
        elif stages:
            stages[-1].append(instruction)
        elif instruction.keyword == "ARG":
            name, _, default = instruction.args.partition("=")
            global_args[name] = default
    return global_args, stages


# Global ARGs, then each stage's instructions.
Dockerfile = tuple[dict[str, str], list[list[Instruction]]]


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return _parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def _final_stage(dockerfile: Dockerfile) -> list[Instruction]:
    return dockerfile[1][-1]


def _base_image(from_args: str, global_args: dict[str, str]) -> str:
    image = from_args.split()[0]
    return re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), image)


def test_dockerfile_is_multi_stage_on_python_slim(dockerfile: Dockerfile) -> None:
    global_args, stages = dockerfile
    assert len(stages) >= 2, "the Dockerfile must have a builder and a runtime stage"
    for stage in stages:
        assert _base_image(stage[0].args, global_args) == "python:3.11-slim", stage[0]
    # The runtime stage takes the venv from the builder.
    copies = [i.args for i in _final_stage(dockerfile) if i.keyword == "COPY"]
    assert any(c.startswith("--from=builder") and "/opt/venv" in c for c in copies), copies


def test_dockerfile_builder_installs_the_package_with_flower(dockerfile: Dockerfile) -> None:
    runs = " ".join(i.args for i in dockerfile[1][0] if i.keyword == "RUN")
    assert "/opt/venv" in runs
    assert '.[flower]"' in runs


def test_dockerfile_final_stage_runs_as_non_root(dockerfile: Dockerfile) -> None:
    users = [i.args for i in _final_stage(dockerfile) if i.keyword == "USER"]
    assert users, "the final stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user == "10001"


def test_dockerfile_final_stage_has_no_build_tools(dockerfile: Dockerfile) -> None:
    runs = " ".join(i.args for i in _final_stage(dockerfile) if i.keyword == "RUN")
    for tool in ("build-essential", "gcc", "g++", "make ", "apt-get install", "curl"):
        assert tool not in runs, f"{tool!r} installed in the final stage"


def test_dockerfile_runtime_settings(dockerfile: Dockerfile) -> None:
    final = _final_stage(dockerfile)
    by_keyword: dict[str, list[str]] = {}
    for i in final:
        by_keyword.setdefault(i.keyword, []).append(i.args)
    env = " ".join(by_keyword.get("ENV", []))
    assert "PYTHONUNBUFFERED=1" in env
    assert "PIXELBATCH_DATA_DIR=/data" in env
    assert by_keyword["WORKDIR"][-1] == "/app"
    assert "8000" in by_keyword["EXPOSE"][-1].split()
    assert "/data" in by_keyword["VOLUME"][-1]
    assert json.loads(by_keyword["CMD"][-1]) == [
        "pixelbatch",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]


def test_dockerfile_healthcheck_uses_python_on_healthz(dockerfile: Dockerfile) -> None:
    checks = [i.args for i in _final_stage(dockerfile) if i.keyword == "HEALTHCHECK"]
    assert checks, "the final stage must have a HEALTHCHECK"
    assert "CMD" in checks[-1]
    assert "python" in checks[-1]
    assert "/healthz" in checks[-1]


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for pattern in (".venv", ".git", "pixelbatch-data", "bench/.cache", ".env", ".pytest_cache"):
        assert pattern in patterns, f"{pattern} missing from .dockerignore"


# --------------------------------------------------------------------------- compose


def test_compose_config_has_every_service(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    for name in (
        "postgres",
        "redis",
        "minio",
        "createbucket",
        "migrate",
        "api",
        "worker",
        "flower",
        "prometheus",
        "grafana",
    ):
        assert name in services, f"service {name} missing"
    assert "flower" in services


def test_compose_app_services_share_one_image(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, images


def test_compose_app_services_share_no_volume_and_store_in_minio(
    compose_config: dict[str, Any],
) -> None:
    """No disk is shared: every file of a batch goes to the MinIO bucket, created before
    the API and the workers start, and clients download from MinIO's published port."""
    services = compose_config["services"]
    for name in APP_SERVICES:
        assert not services[name].get("volumes"), f"{name} mounts a volume"
    assert "pixelbatch-data" not in compose_config.get("volumes", {})
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["PIXELBATCH_STORAGE_URL"] == "s3://pixelbatch/outputs", name
        assert env["PIXELBATCH_S3_ENDPOINT_URL"] == "http://minio:9000", name
        assert env["PIXELBATCH_S3_PUBLIC_ENDPOINT_URL"] == "http://localhost:9000", name
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"], name
    minio = services["minio"]
    assert minio["image"].startswith("minio/minio:RELEASE.")
    assert _volume_mounts(minio).get("/data") == "minio-data"
    assert "9000" in json.dumps(minio["ports"])
    assert _as_list(minio["healthcheck"]["test"])[1:] == ["mc", "ready", "local"]
    createbucket = services["createbucket"]
    assert createbucket["depends_on"]["minio"]["condition"] == "service_healthy"
    assert str(createbucket["restart"]) == "no"
    script = " ".join(_as_list(createbucket["entrypoint"]))
    assert re.search(r'"local/\$+PIXELBATCH_S3_BUCKET"', script), script
    assert "mc mb --ignore-existing" in script
    assert createbucket["environment"]["PIXELBATCH_S3_BUCKET"] == "pixelbatch"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["createbucket"]["condition"] == "service_completed_successfully", name


def test_compose_healthchecks(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    for name in ("postgres", "redis", "api"):
        assert _healthcheck_enabled(services[name]), f"{name} has no healthcheck"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "ping" in services["redis"]["healthcheck"]["test"]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    # The image's HTTP healthcheck must not mark HTTP-less roles unhealthy.
    for name in ("worker", "migrate"):
        assert not _healthcheck_enabled(services[name]), f"{name} inherits an HTTP healthcheck"


def test_compose_start_order(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert str(services["migrate"]["restart"]) == "no"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert services["flower"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_commands(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert _as_list(services["migrate"]["command"]) == ["pixelbatch", "db", "upgrade"]
    assert _as_list(services["api"]["command"])[:2] == ["pixelbatch", "serve"]
    worker = _as_list(services["worker"]["command"])
    assert "worker" in worker
    assert worker[0] == "pixelbatch"
    flower = _as_list(services["flower"]["command"])
    assert flower[:3] == ["celery", "--app", "pixelbatch.jobs.celery_app:app"]
    assert "flower" in flower


def test_compose_worker_scaling_and_shutdown(compose_config: dict[str, Any]) -> None:
    worker = compose_config["services"]["worker"]
    assert worker["deploy"]["replicas"] >= 2
    # Compose sets no PIXELBATCH_CHUNK_TIME_LIMIT: the code's default applies.
    assert "PIXELBATCH_CHUNK_TIME_LIMIT" not in worker["environment"]
    grace = _duration_seconds(worker["stop_grace_period"])
    assert grace > _default_chunk_time_limit(), "a stopping worker must outlast a chunk"


def test_compose_redis_persists_the_queue(compose_config: dict[str, Any]) -> None:
    redis = compose_config["services"]["redis"]
    command = _as_list(redis["command"])
    assert command[command.index("--appendonly") + 1] == "yes"
    assert _volume_mounts(redis).get("/data")


def test_compose_publishes_only_the_api_and_local_flower(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    for name in ("postgres", "redis", "migrate", "worker"):
        assert not services[name].get("ports"), f"{name} should not publish ports"
    flower_ports = json.dumps(services["flower"]["ports"])
    assert "127.0.0.1" in flower_ports


def test_compose_refuses_to_run_without_secrets(tmp_path: Path) -> None:
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    result = _run_compose_config({}, empty_env_file, "--quiet")
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr or "PIXELBATCH_WEBHOOK_SECRET" in result.stderr


def test_compose_env_example_is_complete_and_holds_no_secret() -> None:
    result = _run_compose_config({}, ENV_EXAMPLE, "--quiet")
    assert result.returncode == 0, result.stderr
    values = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    )
    for name in COMPOSE_REQUIRED_ENV:
        assert "CHANGE-ME" in values[name], f"{name} in .env.example must be a placeholder"


# --------------------------------------------------------------------------- Kubernetes


def _k8s_cases() -> list[Any]:
    return [
        pytest.param(path, index, id=f"{path.name}#{index}")
        for path in _k8s_files()
        for index, _ in enumerate(_load_yaml_docs(path))
    ]


@pytest.mark.parametrize(("path", "index"), _k8s_cases())
def test_k8s_manifest_is_valid(path: Path, index: int) -> None:
    kv = _kubernetes_validate()
    document = _load_yaml_docs(path)[index]
    for version in (*K8S_VERSIONS, kv.latest_version()):
        try:
            kv.validate(document, version, strict=True)
        except kv.ValidationError as e:
            location = ".".join(str(p) for p in e.path)
            pytest.fail(f"{path.name} invalid for Kubernetes {version}: {location}: {e.message}")
        except kv.SchemaNotFoundError as e:
            pytest.fail(f"{path.name}: {e.message}")


def test_k8s_strict_validation_rejects_unknown_fields() -> None:
    kv = _kubernetes_validate()
    deployment = _k8s_object("Deployment", "pixelbatch-api")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, K8S_VERSIONS[0], strict=True)


def test_k8s_kustomization_lists_every_manifest() -> None:
    kustomization = _load_yaml_docs(KUSTOMIZATION)[0]
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(p.name for p in _k8s_files())
    namespace = _k8s_object("Namespace", kustomization["namespace"])
    for obj in _k8s_objects():
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace["metadata"]["name"]
    image_names = {image["name"] for image in kustomization["images"]}
    for where, pod in _pod_specs():
        for container in _containers(pod):
            assert container["image"] in image_names, f"{where}: image not set by kustomization"


def test_k8s_api_probes() -> None:
    deployment = _k8s_object("Deployment", "pixelbatch-api")
    assert deployment["spec"]["replicas"] >= 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    liveness = container["livenessProbe"]["httpGet"]
    readiness = container["readinessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert readiness["path"] == "/readyz"
    for probe in (liveness, readiness):
        assert ports.get(probe["port"], probe["port"]) == 8000


def test_k8s_service_routes_80_to_the_api() -> None:
    service = _k8s_object("Service", "pixelbatch-api")
    deployment = _k8s_object("Deployment", "pixelbatch-api")
    assert service["spec"]["type"] == "ClusterIP"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["port"] == 80
    assert ports.get(port["targetPort"], port["targetPort"]) == 8000


def test_k8s_every_container_has_resources() -> None:
    for where, pod in _pod_specs():
        for container in _containers(pod):
            resources = container.get("resources", {})
            for key in ("requests", "limits"):
                assert {"cpu", "memory"} <= resources.get(key, {}).keys(), (
                    f"{where}/{container['name']}: resources.{key} needs cpu and memory"
                )


def test_k8s_every_pod_runs_as_non_root() -> None:
    for where, pod in _pod_specs():
        pod_context = pod.get("securityContext", {})
        for container in _containers(pod):
            context = {**pod_context, **container.get("securityContext", {})}
            name = f"{where}/{container['name']}"
            assert context.get("runAsNonRoot") is True, name
            assert context.get("runAsUser", 0) != 0, name
            assert context.get("allowPrivilegeEscalation") is False, name
            assert context.get("capabilities", {}).get("drop") == ["ALL"], name
            if context.get("readOnlyRootFilesystem"):
                mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                assert "/tmp" in mounts, f"{name}: read-only root needs a writable /tmp"
        assert pod.get("automountServiceAccountToken") is False, where


def test_k8s_every_pod_gets_config_and_secret() -> None:
    configmap = _k8s_object("ConfigMap", "pixelbatch-config")
    secret = _k8s_object("Secret", "pixelbatch-secrets")
    for where, pod in _pod_specs():
        for container in _containers(pod):
            sources = container.get("envFrom", [])
            configmaps = {s["configMapRef"]["name"] for s in sources if "configMapRef" in s}
            secrets = {s["secretRef"]["name"] for s in sources if "secretRef" in s}
            assert configmap["metadata"]["name"] in configmaps, where
            assert secret["metadata"]["name"] in secrets, where
    assert configmap["data"]["PIXELBATCH_AUTH"] == "on", "API keys must be on in a deployment"
    for name in (
        "PIXELBATCH_DATABASE_URL",
        "PIXELBATCH_BROKER_URL",
        "PIXELBATCH_WEBHOOK_SECRET",
        "PIXELBATCH_SECRET_KEY",
    ):
        assert name in secret["stringData"], name
        assert name not in configmap["data"], f"{name} is a secret: keep it out of the ConfigMap"
        assert "CHANGE-ME" in secret["stringData"][name], f"{name} must be a placeholder"


def test_k8s_migrate_job_runs_db_upgrade() -> None:
    job = _k8s_object("Job", "pixelbatch-migrate")
    assert job["spec"]["backoffLimit"] >= 1
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in {"Never", "OnFailure"}
    (container,) = pod["containers"]
    command = [*container.get("command", []), *container.get("args", [])]
    assert command == ["pixelbatch", "db", "upgrade"]


def test_k8s_worker_deployment() -> None:
    deployment = _k8s_object("Deployment", "pixelbatch-worker")
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    config = _k8s_object("ConfigMap", "pixelbatch-config")["data"]
    time_limit = float(config.get("PIXELBATCH_CHUNK_TIME_LIMIT", _default_chunk_time_limit()))
    assert pod["terminationGracePeriodSeconds"] > time_limit, (
        "a stopping worker must outlast a chunk"
    )
    (container,) = pod["containers"]
    command = [*container.get("command", []), *container.get("args", [])]
    assert command[:2] == ["pixelbatch", "worker"]
    # Concurrency pinned to the CPU limit: the default would count the node's cores.
    concurrency = int(command[command.index("--concurrency") + 1])
    cpu_limit = container["resources"]["limits"]["cpu"]
    assert concurrency == int(cpu_limit), (concurrency, cpu_limit)


def test_k8s_pods_share_no_volume_and_store_in_s3() -> None:
    """No PersistentVolumeClaim: API and worker pods on any node share only PostgreSQL,
    Redis and the S3 bucket."""
    assert [o for o in _k8s_objects() if o["kind"] == "PersistentVolumeClaim"] == []
    for where, pod in _pod_specs():
        for container in _containers(pod):
            assert _pvc_mounts(pod, container) == {}, where
        kinds = {k for v in pod.get("volumes", []) for k in v if k != "name"}
        assert kinds <= {"emptyDir"}, (where, kinds)
    config = _k8s_object("ConfigMap", "pixelbatch-config")["data"]
    assert config["PIXELBATCH_STORAGE_URL"].startswith("s3://")
    assert "PIXELBATCH_DATA_DIR" not in config
    from pixelbatch.settings import Settings

    # The URL is one the settings accept.
    Settings(storage_url=config["PIXELBATCH_STORAGE_URL"])


# --------------------------------------------------------------------------- CLI


def _pixelbatch_commands() -> list[list[str]]:
    """Every `pixelbatch ...` command line run by the Dockerfile, compose and k8s."""
    commands: list[list[str]] = []
    _, stages = _parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    commands += [json.loads(i.args) for i in stages[-1] if i.keyword == "CMD"]
    with COMPOSE_FILE.open(encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    commands += [_as_list(s["command"]) for s in compose["services"].values() if "command" in s]
    for _, pod in _pod_specs():
        for container in _containers(pod):
            commands.append([*container.get("command", []), *container.get("args", [])])
    unique = {tuple(c): c for c in commands if c and c[0] == "pixelbatch"}
    return sorted(unique.values())


def _subcommand(command: list[str]) -> list[str]:
    words = []
    for word in command[1:]:
        if word.startswith("-"):
            break
        words.append(word)
    return words


def _pixelbatch_executable() -> list[str]:
    script = Path(sys.executable).parent / "pixelbatch"
    if script.exists():
        return [str(script)]
    found = shutil.which("pixelbatch")
    return [found] if found else [sys.executable, "-m", "pixelbatch"]


@pytest.mark.parametrize(
    "command", _pixelbatch_commands(), ids=lambda c: " ".join(_subcommand(c)) or "pixelbatch"
)
def test_deploy_commands_exist_in_the_cli(command: list[str]) -> None:
    subcommand = _subcommand(command)
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    result = subprocess.run(
        [*_pixelbatch_executable(), *subcommand, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (
        f"`pixelbatch {' '.join(subcommand)}` is not a CLI command:\n{result.stdout}{result.stderr}"
    )
    for option in (word for word in command if word.startswith("--")):
        assert option.split("=")[0] in result.stdout, (
            f"`pixelbatch {' '.join(subcommand)}` has no option {option}"
        )
