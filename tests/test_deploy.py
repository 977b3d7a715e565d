"""The production files: compose wiring and the Dockerfile's commands exist in this checkout."""
import shutil
import subprocess

import pytest
import yaml

from app.core.config import ROOT


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_web_and_workers_share_the_staging_volume_and_wait_for_healthy_services(compose):
    services = compose["services"]
    for name in ("web", "worker"):
        assert "staging:/data/staging" in services[name]["volumes"]
        assert services[name]["environment"]["PORTAL_STAGING_DIR"] == "/data/staging"
        assert services[name]["environment"]["PORTAL_MODE"] == "production"
        assert services[name]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                                "redis": {"condition": "service_healthy"}}
    assert all("healthcheck" in services[name] for name in ("web", "worker", "redis", "postgres"))
    assert services["worker"]["environment"]["PORTAL_BROKER_URL"].startswith("redis://redis:")


def test_compose_commands_are_real_subcommands(compose):
    from app.cli import main

    for name in ("web", "worker"):
        command = compose["services"][name]["command"]
        for part in command.split("&&"):
            words = part.replace('sh -c "', "").strip(' "').split()
            assert words[0] == "upload-portal"
            with pytest.raises(SystemExit) as e:
                main([*words[1:], "--help"])
            assert e.value.code == 0


@pytest.mark.skipif(shutil.which("docker") is None or subprocess.run(
    ["docker", "compose", "version"], capture_output=True).returncode != 0, reason="no docker compose client here")
def test_docker_compose_accepts_the_file(tmp_path):
    env = {"PORTAL_SECRET_KEY": "x" * 40, "PORTAL_ENCRYPTION_KEY": "y" * 40, "POSTGRES_PASSWORD": "p", "PORTAL_OMERO_HOST": "omero"}
    result = subprocess.run(["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dockerfile_installs_with_files_that_exist():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for path in ("scripts/install-omero.sh", "constraints.txt"):
        assert path in dockerfile and (ROOT / path).exists(), path
