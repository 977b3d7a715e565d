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


def test_two_portals_on_one_host_leave_no_shared_control_socket(embedded_stack, tmp_path):
    import requests

    from tests.helpers import start_served

    home = tmp_path / "home"
    home.mkdir()
    served = []
    try:
        for n in (1, 2):  # each its own data; the same user's home, as two instances or a portal and its tests
            stack = embedded_stack | {"PORTAL_DATA_DIR": str(tmp_path / f"data{n}"), "HOME": str(home), "XDG_RUNTIME_DIR": str(home)}
            served.append(start_served(stack, tmp_path, "--no-worker"))
        assert not list(home.rglob("*.ctl"))  # gunicorn's per-user control socket is not made at all
        served[0][1].stop()
        assert requests.get(served[1][0] + "/login", timeout=10).status_code == 200
    finally:
        for _url, process in served:
            process.stop()
