"""The pages themselves: the help page (open to everyone, linked in the header) and the upload page's
safety rules (no inline script or handler, a CSP, nothing from another origin)."""
import re

import pytest

from app.core.jobs import STATES
from tests.helpers import Portal


def test_the_help_page_is_open_linked_and_explains_colours_places_and_retention(embedded_app):
    embedded_app.config["RETENTION_DAYS"] = 21
    client = embedded_app.test_client()
    login = client.get("/login").get_data(as_text=True)
    assert 'href="/help"' in login  # reachable before signing in
    page = client.get("/help")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    for state in STATES:
        shown = f'class="state state-{state.name} colour-{state.colour}">{state.label}<' in text
        assert shown == state.in_legend, state
    assert "Project = the microscope" in text and "Dataset = the acquisition date" in text
    assert "at most 21 days" in re.sub(r"\s+", " ", text)


def test_the_help_page_lists_every_format_its_plugin_declares(embedded_app):
    from converters import declared

    text = embedded_app.test_client().get("/help").get_data(as_text=True)
    for f in declared.readers():
        assert f"<td>{f.name}</td>" in text and f.help.replace("'", "&#39;") in text, f.name
    assert "(with &lt;stem&gt;_&lt;n&gt;.ser)" in text


@pytest.mark.parametrize("path", ["/", "/help", "/history", "/tokens"])
def test_pages_have_no_inline_script_or_handler_and_load_nothing_from_elsewhere(embedded_app, path):
    alice = Portal(embedded_app.test_client(), "alice")
    response = alice.get(path)
    html = response.get_data(as_text=True)
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag or 'type="application/json"' in tag, tag
    assert not re.search(r"\son[a-z]+\s*=", html)  # no onclick= and friends
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # no CDN
