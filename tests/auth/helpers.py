"""Helpers of the sign-in tests: the OpenID Connect provider process and a browser-like walk through
its redirects (the fixtures are in conftest.py)."""
from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import time
from urllib.parse import urlsplit

import requests

from tests.helpers import ROOT, free_port

CLIENT_ID, CLIENT_SECRET = "portal", "portal-client-secret"
STAFF_GROUP = "imaging-staff"


class Provider:
    """oidc-provider-mock in its own process on a loopback port."""

    def __init__(self, log_path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.auth.oidc_provider", "--port", str(self.port), *args],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.log_path = log_path
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the provider exited: {log_path.read_text()[-2000:]}")
            try:
                requests.get(self.url + "/.well-known/openid-configuration", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("the provider did not start")

    def set_user(self, sub: str, claims: dict) -> None:
        requests.put(f"{self.url}/users/{sub}", json=claims, timeout=10).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def oidc_env(tmp_path, provider: Provider, **extra) -> dict:
    return {
        "PORTAL_MODE": "embedded", "PORTAL_DATA_DIR": str(tmp_path / "data"), "PORTAL_STAGING_RESERVE": "0",
        "PORTAL_JOB_LEASE_SECONDS": "3", "PORTAL_SSE_HEARTBEAT": "1",
        "PORTAL_OIDC_DISCOVERY_URL": provider.url + "/.well-known/openid-configuration",
        "PORTAL_OIDC_CLIENT_ID": CLIENT_ID, "PORTAL_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "PORTAL_OIDC_USERNAME_STRIP": r"@example\.org$",
        "PORTAL_STAFF_GROUP_CLAIM": "group", "PORTAL_STAFF_GROUP_VALUE": STAFF_GROUP,
        **extra,
    }


def adfs_sign_in(client, provider: Provider, sub: str, *, tamper_state: bool = False, next_url: str = "/tokens"):
    """What a browser does: portal -> provider's authorize page -> (user picks `sub`) -> portal callback.
    Returns the portal's answer to the callback."""
    start = client.get("/login/adfs", query_string={"next": next_url})
    assert start.status_code == 302, start.get_data(as_text=True)
    authorize = start.headers["Location"]
    assert authorize.startswith(provider.url + "/oauth2/authorize?")
    for part in ("state=", "nonce=", "code_challenge=", "code_challenge_method=S256"):
        assert part in authorize
    answer = requests.post(authorize, data={"sub": sub}, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["Location"])
    query = back.query
    if tamper_state:
        query = re.sub(r"state=[^&]+", "state=forged0state0value", query)
    return client.get(f"{back.path}?{query}")


def flashed(response) -> str:
    page = response.get_data(as_text=True)
    return html.unescape(" ".join(re.findall(r"<p class=\"flash\" role=\"alert\">(.*?)</p>", page, re.S)))
