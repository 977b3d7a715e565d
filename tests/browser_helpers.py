"""Helpers for the pages in headless Chromium (Debian's, driven by Playwright); the `browser` and
`served_without_worker` fixtures are in conftest.py."""
import shutil

from tests.helpers import ROOT, SAMPLES

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MICROSCOPE_PC = {"width": 1280, "height": 1024}
ROWS = "#rows tbody tr"


def sign_in(browser, base, username, viewport=MICROSCOPE_PC):
    page = browser.new_context(viewport=viewport).new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # a refused or failed request is logged by the browser itself: the page handles those
    page.on("console", lambda message: message.type == "error" and not message.text.startswith(
        "Failed to load resource") and errors.append(message.text))
    page.errors = errors
    page.goto(base + "/login")
    page.fill("input[name=username]", username)
    page.click("form:has(input[name=username]) button")
    page.wait_for_url(base + "/")
    page.wait_for_selector("body[data-ready=true]")
    return page


def shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def row(page, name):
    return page.locator(ROWS, has_text=name)


def state(page, name):
    return row(page, name).get_attribute("data-state")


def wait_for_state(page, name, wanted, timeout=120_000):
    page.locator(f"{ROWS}[data-state={wanted}]", has_text=name).wait_for(timeout=timeout)


def badge(page, name):
    """What the row's state badge shows: its text, its symbol and its colour."""
    return tuple(row(page, name).locator(".state").evaluate(
        "b => [b.textContent, getComputedStyle(b, '::before').content, getComputedStyle(b).backgroundColor]"))


def copy_samples(folder, names: dict[str, str]):
    folder.mkdir(parents=True)
    for target, source in names.items():
        shutil.copy(SAMPLES / source, folder / target)
    return folder


def make_staff(stack, username):
    """Make a user of the served embedded portal staff (the role a sign-in gives is read anew each request)."""
    import sqlalchemy as sa

    from app.core.db import Database
    from app.core.models import User

    db = Database(f"sqlite:///{stack['PORTAL_DATA_DIR']}/portal.sqlite")
    with db.session() as session:
        session.execute(sa.update(User).where(User.username == username).values(is_staff=True))
        session.commit()
    db.dispose()
