"""docker/compose.yaml and docker/Dockerfile, checked statically (every service supervised, volumes and env
consistent, commands that exist); and `docker compose up` where a Docker engine answers (skipped otherwise)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ONE_SHOT = {"migrate"}  # jobs that exit 0 when done: no healthcheck, restarted only on failure


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


def vitrine_services(services) -> dict:
    return {name: s for name, s in services.items() if s.get("image", "").startswith("vitrine:")}


def test_every_service_is_supervised_and_limited(services):
    assert {"kafka", "postgres", "migrate", "api", "worker", "dashboard"} <= set(services)
    for name, s in services.items():
        limits = s.get("deploy", {}).get("resources", {}).get("limits", {})
        assert limits.get("cpus") and limits.get("memory"), f"{name}: no resource limits"
        if name in ONE_SHOT:
            assert s["restart"].startswith("on-failure"), name
            assert s["healthcheck"] == {"disable": True}, name
            continue
        assert s.get("restart") in ("unless-stopped", "always"), f"{name}: no restart policy"
        check = s.get("healthcheck", {})
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"


def test_dependencies_wait_for_health_or_completion(services):
    for name, s in services.items():
        for dep, cond in s.get("depends_on", {}).items():
            want = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert cond["condition"] == want, f"{name} -> {dep}"


def test_kafka_is_kraft_with_its_log_dir_on_the_volume(compose, services):
    env = services["kafka"]["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and env["CLUSTER_ID"].startswith("${KAFKA_CLUSTER_ID")
    mounts = dict(v.split(":")[::-1][:2][::-1] for v in services["kafka"]["volumes"])  # volume -> path
    assert env["KAFKA_LOG_DIRS"] == mounts["kafka-data"]
    port = urlsplit(f"//{env['KAFKA_ADVERTISED_LISTENERS'].split('://')[1]}")
    for s in vitrine_services(services).values():
        assert s["environment"]["VITRINE_KAFKA_BOOTSTRAP"] == f"{port.hostname}:{port.port}"


def test_volumes_are_declared_used_and_owned(compose, services, dockerfile):
    used = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith((".", "/"))}
    assert used == set(compose["volumes"])
    data_dir = re.search(r"VITRINE_DATA_DIR=(\S+)", dockerfile).group(1)
    assert services["worker"]["volumes"] == [f"models:{data_dir}/models"]
    assert f"mkdir -p {data_dir}/models" in dockerfile and f"chown -R vitrine:vitrine {data_dir}" in dockerfile
    runtime = dockerfile.split("AS runtime")[1]
    assert "USER vitrine" in runtime and f'VOLUME ["{data_dir}/models"]' in runtime


def test_env_is_consistent(services):
    pg = services["postgres"]["environment"]
    for name, s in vitrine_services(services).items():
        raw = s["environment"]["VITRINE_DATABASE_URL"]
        assert "${POSTGRES_PASSWORD" in raw and "${POSTGRES_PASSWORD" in pg["POSTGRES_PASSWORD"], name
        url = urlsplit(re.sub(r"\$\{[^}]*\}", "secret", raw))  # `${VAR:?message}` would confuse the parser
        assert url.hostname == "postgres" and url.username == pg["POSTGRES_USER"], name
        assert url.path == f"/{pg['POSTGRES_DB']}" and url.port == 5432, name
    example = (ROOT / "docker" / ".env.example").read_text()
    needed = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    assert needed == set(re.findall(r"^(\w+)=", example, re.M))  # the example names every required variable


def test_images_and_commands_exist(services, dockerfile):
    from typer.main import get_command

    from vitrine.cli import app

    stages = set(re.findall(r"^FROM \S+ AS (\w+)", dockerfile, re.M))
    build = services["migrate"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert build["target"] in stages
    commands = get_command(app).commands
    for name, s in vitrine_services(services).items():
        assert s["command"][0] in commands, f"{name}: `vitrine {s['command'][0]}` does not exist"
    dashboard = services["dashboard"]
    port = dashboard["command"][dashboard["command"].index("--port") + 1]
    assert f":{port}/" in dashboard["healthcheck"]["test"][-1] and dashboard["ports"] == [f"{port}:{port}"]


def test_the_image_copies_every_package_and_no_embedded_stack(dockerfile):
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pattern in packages["include"]:
        package = pattern.rstrip("*")
        assert f"COPY {package} ./{package}" in dockerfile, f"the image lacks {package}/"
    assert "[embedded]" not in dockerfile.split("AS runtime")[0].split("RUN pip install .")[1].split("\n")[0]


def test_dockerignore_keeps_local_state_out():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".vitrine", "test-artifacts", ".git", "docker/.env"} <= ignored


def test_compose_spec_validation():
    """Against the compose spec, where `check-jsonschema` (PyPI) or `docker-compose` (Debian) is installed."""
    if tool := shutil.which("check-jsonschema"):
        cmd = [tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)]
    elif tool := shutil.which("docker-compose"):
        cmd = [tool, "-f", str(COMPOSE), "--env-file", str(COMPOSE.parent / ".env.example"), "config", "-q"]
    else:
        pytest.skip("neither check-jsonschema nor docker-compose is installed")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def docker_engine_reason() -> str | None:
    """Why `docker compose up` cannot run here, or None if it can."""
    if not shutil.which("docker"):
        return "no docker client"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out"
    if info.returncode != 0:
        return f"no Docker engine: {(info.stderr.strip().splitlines() or ['docker info failed'])[-1]}"
    if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=20).returncode != 0:
        return "the docker compose plugin is not installed"
    return None


def test_compose_up_runs_every_service_healthy():
    """The whole stack on a real engine: built, migrated, every long-running service healthy."""
    if reason := docker_engine_reason():
        pytest.skip(reason)
    base = ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(COMPOSE.parent / ".env.example")]
    base += ["-p", "vitrine-test"]
    try:
        up = subprocess.run([*base, "up", "-d", "--build", "--wait"], capture_output=True, text=True, timeout=1800)
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        ps = subprocess.run([*base, "ps", "--format", "{{.Service}} {{.Health}}"], capture_output=True, text=True)
        health = dict(line.split(" ", 1) for line in ps.stdout.splitlines() if line.strip())
        assert all(health.get(s) == "healthy" for s in ("kafka", "postgres", "api", "worker", "dashboard")), health
    finally:
        subprocess.run([*base, "down", "-v"], capture_output=True, timeout=300)
