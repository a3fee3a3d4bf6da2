"""The deployment files: compose validity, required secrets, healthchecks and start order,
the image's Dockerfile, Prometheus' scrape config. No network and no Docker engine.

``docker-compose config`` (Debian's ``docker-compose``) or ``docker compose config``
validates the compose files; ``promtool`` (Debian's ``prometheus``) checks the Prometheus
config. Those tests skip only when the binary is absent, and fail instead under CI
(``CI`` set), so that a missing install step cannot hide a broken file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from services.monitor.analytics.settings import AnalyticsSettings
from shared.events.topics import all_topics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEV = ROOT / "deploy" / "docker-compose.dev.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"

APPS = {"registry": 8101, "checkpoint": 8102, "notifier": 8103, "monitor": 8104}
# Each service's one-shot that brings its database to the release's schema before it starts.
MIGRATES = {f"{name}-migrate": name for name in APPS}
# Each service's metrics listener: on the compose network for Prometheus, never published.
METRICS = {"registry": 9101, "checkpoint": 9102, "notifier": 9103, "monitor": 9104}
# The monitor's analytics worker (faust): the same image, its own command; /metrics on its
# faust web port.
ANALYTICS_PORT = 6066
REQUIRED = [
    "ABSCH_ADMIN_TOKEN",
    "POSTGRES_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "JWT_PRIVATE_KEY_FILE",
]
DEFAULTED = re.compile(r"\$\{(\w+):?-([^}]*)\}")


# ---------------------------------------------------------------------------- helpers


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _services(path: Path = COMPOSE) -> dict[str, dict[str, Any]]:
    return dict(_load(path)["services"])


def _tool_missing(what: str, install: str) -> NoReturn:
    message = f"{what} is not installed ({install})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must install it")
    pytest.skip(message)


def _compose_command() -> list[str]:
    if exe := shutil.which("docker-compose"):
        return [exe]
    docker = shutil.which("docker")
    if docker:
        plugin = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if plugin.returncode == 0:
            return [docker, "compose"]
    _tool_missing("docker-compose", "apt-get install -y docker-compose")


@pytest.fixture
def secrets_env(tmp_path: Path) -> dict[str, str]:
    """A clean environment with the required variables, nothing from the caller's shell."""
    key = tmp_path / "registry.pem"
    key.write_text("not read by `config`\n")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "ABSCH_ADMIN_TOKEN": "0" * 64,
        "POSTGRES_PASSWORD": "p" * 48,
        "GRAFANA_ADMIN_PASSWORD": "g" * 32,
        "JWT_PRIVATE_KEY_FILE": str(key),
    }


def _compose(
    env: dict[str, str],
    tmp: Path,
    *files: Path,
    args: tuple[str, ...] = ("-q",),
    env_file: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``compose config`` with an explicit (by default empty) env file, so that a developer's
    ``.env`` at the repository root cannot supply a missing variable."""
    if env_file is None:
        env_file = tmp / "empty.env"
        env_file.write_text("")
    command = [*_compose_command(), "--env-file", str(env_file)]
    for f in files:
        command += ["-f", str(f)]
    return subprocess.run(
        [*command, "config", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _resolve_defaults(value: str) -> str:
    return DEFAULTED.sub(lambda m: m.group(2), value)


def _host_ips(ports: list[Any]) -> Iterator[str | None]:
    """Host address of each published port, short or long syntax (None: all interfaces)."""
    for port in ports:
        if isinstance(port, dict):
            yield port.get("host_ip")
            continue
        parts = _resolve_defaults(str(port)).split(":")
        yield parts[0] if len(parts) == 3 else None


def _one_shot(services: dict[str, dict[str, Any]]) -> set[str]:
    """Services others wait for to *complete*: they are not long-running."""
    return {
        name
        for svc in services.values()
        for name, cond in (svc.get("depends_on") or {}).items()
        if isinstance(cond, dict) and cond.get("condition") == "service_completed_successfully"
    }


# ---------------------------------------------------------------- (a), (b) compose config


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, DEV)], ids=["main", "main+dev"])
def test_compose_config_is_valid(
    files: tuple[Path, ...], secrets_env: dict[str, str], tmp_path: Path
) -> None:
    result = _compose(secrets_env, tmp_path, *files)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", REQUIRED)
def test_required_variable_has_no_default(
    missing: str, secrets_env: dict[str, str], tmp_path: Path
) -> None:
    del secrets_env[missing]
    result = _compose(secrets_env, tmp_path, COMPOSE)
    assert result.returncode != 0
    assert missing in result.stderr


def test_empty_required_variable_is_refused(secrets_env: dict[str, str], tmp_path: Path) -> None:
    secrets_env["ABSCH_ADMIN_TOKEN"] = ""
    result = _compose(secrets_env, tmp_path, COMPOSE)
    assert result.returncode != 0
    assert "ABSCH_ADMIN_TOKEN" in result.stderr


def test_env_example_once_filled_in_is_a_valid_env_file(
    secrets_env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in secrets_env.items() if k in ("PATH", "HOME")}
    filled = ENV_EXAMPLE.read_text()
    for name in REQUIRED:
        filled = re.sub(rf"^{name}=$", f"{name}={secrets_env[name]}", filled, flags=re.M)
    env_file = tmp_path / "filled.env"
    env_file.write_text(filled)
    result = _compose(env, tmp_path, COMPOSE, env_file=env_file)
    assert result.returncode == 0, result.stderr


def test_resolved_configs_are_production_and_dev(
    secrets_env: dict[str, str], tmp_path: Path
) -> None:
    main = _compose(secrets_env, tmp_path, COMPOSE, args=())
    dev = _compose(secrets_env, tmp_path, COMPOSE, DEV, args=())
    assert main.returncode == 0, main.stderr
    assert dev.returncode == 0, dev.stderr
    prod_services = yaml.safe_load(main.stdout)["services"]
    dev_services = yaml.safe_load(dev.stdout)["services"]
    for name in APPS:
        assert prod_services[name]["environment"]["ABSCH_ENV"] == "production"
        assert dev_services[name]["environment"]["ABSCH_ENV"] == "dev"
    assert prod_services["registry"]["environment"]["REGISTRY_JWT_GENERATE_KEY"] == "false"
    assert dev_services["registry"]["environment"]["REGISTRY_JWT_GENERATE_KEY"] == "true"
    for services in (prod_services, dev_services):
        for name, svc in services.items():
            assert set(_host_ips(svc.get("ports", []))) <= {"127.0.0.1"}, name


# ---------------------------------------------------------------- (c) compose structure


def test_every_long_running_service_has_a_healthcheck() -> None:
    services = _services()
    one_shot = _one_shot(services)
    assert one_shot == {"kafka-init", *MIGRATES}
    for name in one_shot:
        assert services[name].get("restart") == "no", name
    for name, svc in services.items():
        if name in one_shot:
            continue
        check = svc.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert len(check["test"]) > 1, name


def test_app_services_run_the_image_from_deploy_dockerfile() -> None:
    services = _services()
    built = {name for name, svc in services.items() if "build" in svc}
    assert built == set(APPS) | set(MIGRATES) | {"analytics"}
    images = {services[name]["image"] for name in built}
    assert len(images) == 1, "the services, their migrations and analytics share one image"
    for name in built:
        build = services[name]["build"]
        assert build["context"] == "."
        assert build["dockerfile"] == "deploy/Dockerfile"
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()


@pytest.mark.parametrize("name", list(APPS))
def test_app_service_start_order_and_lifecycle(name: str) -> None:
    svc = _services()[name]
    deps = svc["depends_on"]
    assert deps["kafka"]["condition"] == "service_healthy"
    assert deps["postgres"]["condition"] == "service_healthy"
    assert deps["kafka-init"]["condition"] == "service_completed_successfully"
    assert deps[f"{name}-migrate"]["condition"] == "service_completed_successfully"
    if name != "registry":  # they fetch the registry's JWKS
        assert deps["registry"]["condition"] == "service_healthy"
    if name == "notifier":
        assert deps["mailpit"]["condition"] == "service_healthy"
    assert svc["restart"] == "unless-stopped"
    assert svc["stop_grace_period"] == "30s"


@pytest.mark.parametrize(("migrate", "name"), list(MIGRATES.items()))
def test_each_service_migrates_its_own_database_before_it_starts(migrate: str, name: str) -> None:
    services = _services()
    one_shot = services[migrate]
    assert one_shot["command"] == ["python", "-m", f"services.{name}.migrate"]
    assert one_shot["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert one_shot["healthcheck"] == {"disable": True}
    variable = f"{name.upper()}_DATABASE_URL"
    assert one_shot["environment"][variable] == services[name]["environment"][variable]


@pytest.mark.parametrize(("name", "port"), list(APPS.items()))
def test_app_service_settings_ports_and_healthcheck(name: str, port: int) -> None:
    svc = _services()[name]
    env = svc["environment"]
    prefix = name.upper()
    assert env["ABSCH_SERVICE"] == name
    assert env["ABSCH_ENV"] == "production"
    assert int(env[f"{prefix}_HTTP_PORT"]) == port
    assert int(env[f"{prefix}_METRICS_PORT"]) == METRICS[name]
    assert [str(p) for p in svc["expose"]] == [str(METRICS[name])]
    url = env[f"{prefix}_DATABASE_URL"]
    assert url.startswith("postgresql+asyncpg://")
    assert url.endswith(f"@postgres:5432/{name}")
    assert env["KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["JWKS_URL"] == "http://registry:8101/.well-known/jwks.json"
    assert [_resolve_defaults(p) for p in svc["ports"]] == [f"127.0.0.1:{port}:{port}"]
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(svc["healthcheck"]["test"])


def test_analytics_worker_runs_the_image_on_rocksdb_with_a_volume_after_kafka_init() -> None:
    compose = _load(COMPOSE)
    svc = compose["services"]["analytics"]
    assert svc["command"] == ["python", "-m", "services.monitor.analytics"]
    assert svc["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "kafka-init": {"condition": "service_completed_successfully"},
    }
    assert svc["restart"] == "unless-stopped"
    env = svc["environment"]
    assert env["ABSCH_ENV"] == "production"
    assert env["KAFKA_BOOTSTRAP"] == "kafka:9092"
    # The same topics as the services (and kafka-init) use.
    for var in ("KAFKA_TOPIC_PREFIX", "KAFKA_PARTITIONS", "KAFKA_REPLICATION"):
        assert env[var] == compose["services"]["monitor"]["environment"][var]
    assert env["ANALYTICS_STORE"] == "rocksdb://"
    assert int(env["ANALYTICS_WEB_PORT"]) == ANALYTICS_PORT
    assert env["ANALYTICS_WEB_HOST"] == "0.0.0.0"  # Prometheus scrapes it from another container
    # The data dir lies inside a named volume, which keeps the RocksDB files.
    mounts = dict(v.split(":", 1) for v in svc["volumes"])
    assert set(mounts) <= set(compose["volumes"])
    assert any(env["ANALYTICS_DATA_DIR"].startswith(target) for target in mounts.values())
    assert [str(p) for p in svc["expose"]] == [str(ANALYTICS_PORT)]
    assert "ports" not in svc
    check = " ".join(svc["healthcheck"]["test"])
    assert f"http://127.0.0.1:{ANALYTICS_PORT}/metrics" in check


def test_the_image_carries_the_rocksdb_store_the_analytics_worker_uses() -> None:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    assert "['optional-dependencies']['rocksdb']" in text
    assert "'rocksdict'" in text  # the build fails when the store cannot be imported


def test_analytics_settings_read_the_compose_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _services()["analytics"]["environment"]
    for name, value in env.items():
        if name.startswith("ANALYTICS_"):
            monkeypatch.setenv(name, str(value))
    settings = AnalyticsSettings()
    assert settings.store == "rocksdb://"
    assert settings.web_port == ANALYTICS_PORT
    assert settings.data_dir == Path(env["ANALYTICS_DATA_DIR"])


def test_registry_reads_its_key_from_a_secret_file_and_requires_the_admin_token() -> None:
    compose = _load(COMPOSE)
    registry = compose["services"]["registry"]
    assert registry["secrets"] == ["registry_jwt_key"]
    assert registry["environment"]["JWT_PRIVATE_KEY_PATH"] == "/run/secrets/registry_jwt_key"
    assert registry["environment"]["REGISTRY_JWT_GENERATE_KEY"] == "false"
    assert registry["environment"]["ABSCH_ADMIN_TOKEN"].startswith("${ABSCH_ADMIN_TOKEN:?")
    assert compose["secrets"]["registry_jwt_key"]["file"].startswith("${JWT_PRIVATE_KEY_FILE:?")


def test_required_secrets_never_get_a_default() -> None:
    text = COMPOSE.read_text() + DEV.read_text()
    for name in REQUIRED:
        assert f"${{{name}:?" in COMPOSE.read_text(), name
        assert not re.search(rf"\$\{{{name}:?-", text), f"{name} has a default"


def test_published_ports_listen_on_loopback_only() -> None:
    for path in (COMPOSE, DEV):
        for name, svc in _services(path).items():
            assert set(_host_ips(svc.get("ports", []))) <= {"127.0.0.1"}, f"{path.name}: {name}"


def test_every_compose_variable_is_documented_in_env_example() -> None:
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE.read_text() + DEV.read_text()))
    documented = set(re.findall(r"^#?(\w+)=", ENV_EXAMPLE.read_text(), flags=re.M))
    assert used - documented == set()
    assert set(REQUIRED) <= used


def test_kafka_is_kraft_with_a_healthcheck_from_its_own_tools() -> None:
    kafka = _services()["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    check = " ".join(kafka["healthcheck"]["test"])
    assert "kafka-broker-api-versions.sh" in check or "kafka-topics.sh" in check


def test_kafka_init_creates_every_topic_with_configured_partitions(tmp_path: Path) -> None:
    """Run kafka-init's script with a stand-in ``kafka-topics.sh`` that records its calls."""
    init = _services()["kafka-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init["entrypoint"] == ["/bin/bash", "-c"]
    script = init["command"][0].replace("$$", "$")
    assert "/opt/kafka/bin/kafka-topics.sh" in script
    log = tmp_path / "calls"
    fake = tmp_path / "kafka-topics.sh"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    fake.chmod(0o755)
    script = script.replace("/opt/kafka/bin/kafka-topics.sh", str(fake))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KAFKA_TOPIC_PREFIX": "x.",
        "KAFKA_PARTITIONS": "6",
        "KAFKA_REPLICATION": "3",
    }
    subprocess.run(["bash", "-c", script], env=env, check=True, timeout=30)
    creates = [line.split() for line in log.read_text().splitlines() if "--create" in line]
    topics = [c[c.index("--topic") + 1] for c in creates]
    assert sorted(topics) == sorted(all_topics("x."))
    for c in creates:
        assert "--if-not-exists" in c
        assert c[c.index("--partitions") + 1] == "6"
        assert c[c.index("--replication-factor") + 1] == "3"
    # The values come from the same variables the services read.
    for var in ("KAFKA_TOPIC_PREFIX", "KAFKA_PARTITIONS", "KAFKA_REPLICATION"):
        assert init["environment"][var] == _services()["registry"]["environment"][var]


def test_postgres_creates_one_database_per_service() -> None:
    pg = _services()["postgres"]
    assert pg["image"].split(":")[0] == "postgres"
    assert _resolve_defaults(pg["image"]).split(":")[1].startswith("16")
    assert "./deploy/postgres:/docker-entrypoint-initdb.d:ro" in pg["volumes"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    sql = "\n".join(p.read_text() for p in (ROOT / "deploy" / "postgres").glob("*.sql"))
    created = set(re.findall(r"CREATE DATABASE (\w+)", sql, flags=re.I))
    assert created == set(APPS)


def test_grafana_is_provisioned_with_prometheus_and_the_dashboards_folder() -> None:
    services = _services()
    grafana = services["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith(
        "${GRAFANA_ADMIN_PASSWORD:?"
    )
    mounts = dict(
        v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if v.startswith("./")
    )
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    datasources = _load(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "9090:9090" in services["prometheus"]["ports"][0]
    providers = _load(GRAFANA / "provisioning" / "dashboards" / "absch.yml")["providers"]
    assert [p["options"]["path"] for p in providers] == [mounts["./deploy/grafana/dashboards"]]
    assert (GRAFANA / "dashboards" / ".gitkeep").exists()


# ---------------------------------------------------------------- (d) Dockerfile


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines()]
    return [
        (ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "")
        for ln in lines
        if ln and not ln.startswith("#")
    ]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = [[]]
    for instr in _instructions():
        if instr[0] == "FROM":
            stages.append([])
        stages[-1].append(instr)
    return stages


def _args(instrs: list[tuple[str, str]]) -> dict[str, str]:
    pairs = (arg.split("=", 1) for kw, arg in instrs if kw == "ARG" and "=" in arg)
    return {k: v.strip('"') for k, v in pairs}


def _expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), value)


def test_dockerfile_is_multi_stage_on_slim_python_311() -> None:
    global_args, *stages = _stages()
    assert len(stages) >= 2
    variables = _args(global_args)
    for stage in stages:
        image = _expand(stage[0][1].split()[0], variables)
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", image), image
    builder, runtime = stages[0], stages[-1]
    assert any(kw == "RUN" and "pip wheel" in arg for kw, arg in builder)
    assert any(kw == "RUN" and "pip install" in arg and "/wheels" in arg for kw, arg in runtime)


def test_dockerfile_runtime_runs_as_non_root_without_build_tools() -> None:
    runtime = _stages()[-1]
    users = [_expand(arg, _args(runtime)) for kw, arg in runtime if kw == "USER"]
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user.strip(), users[-1]
    assert user not in ("root", "0"), users[-1]
    runs = " ".join(arg for kw, arg in runtime if kw == "RUN")
    for tool in ("apt-get install", "build-essential", "gcc", "curl"):
        assert tool not in runs


def test_dockerfile_healthcheck_ports_signal_and_command() -> None:
    runtime = _stages()[-1]
    by_kw: dict[str, list[str]] = {}
    for kw, arg in runtime:
        by_kw.setdefault(kw, []).append(arg)
    (check,) = by_kw["HEALTHCHECK"]
    assert "/healthz" in check
    assert "urllib" in check
    assert "curl" not in check
    exposed = {int(p.split("/")[0]) for arg in by_kw["EXPOSE"] for p in arg.split()}
    assert exposed == set(APPS.values()) | set(METRICS.values())
    assert by_kw["STOPSIGNAL"] == ["SIGTERM"]
    assert len(by_kw["CMD"]) == 1
    assert "ENTRYPOINT" not in by_kw  # a plain CMD: `docker run IMAGE other command` works


def test_dockerignore_lets_in_only_what_the_build_needs() -> None:
    lines = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed <= {"pyproject.toml", "README.md", "shared", "services", "tools"}
    assert {"pyproject.toml", "shared", "services", "tools"} <= allowed


# ---------------------------------------------------------------- (e) Prometheus


def test_prometheus_scrapes_the_four_services_metrics_listeners_every_15s() -> None:
    config = _load(PROMETHEUS)
    default_interval = config.get("global", {}).get("scrape_interval", "1m")
    scraped: dict[str, tuple[str, str]] = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                scraped[target] = (
                    job.get("scrape_interval", default_interval),
                    job.get("metrics_path", "/metrics"),
                )
    for name, port in METRICS.items():
        assert scraped.get(f"{name}:{port}") == ("15s", "/metrics"), name
        assert f"{name}:{APPS[name]}" not in scraped, name  # the public port has no /metrics
    assert scraped.get(f"analytics:{ANALYTICS_PORT}") == ("15s", "/metrics")
    assert set(_services()) >= {t.split(":")[0] for t in scraped} - {"localhost"}


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        _tool_missing("promtool", "apt-get install -y prometheus")
    result = subprocess.run(
        [str(promtool), "check", "config", str(PROMETHEUS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
