"""The staff dashboard in headless Chromium: every user's jobs live, a failure's diagnostics, and the
alarm while no worker runs. Screenshots go to test-artifacts/."""
import sqlalchemy as sa

from app.core.db import Database
from app.core.models import User
from tests.browser_helpers import shot, sign_in
from tests.helpers import ome_tiff


def test_staff_watch_all_users_jobs_and_open_a_failure(browser, served, embedded_stack, tmp_path):  # noqa: F811
    researcher = sign_in(browser, served, "alice")
    (tmp_path / "good.ome.tif").write_bytes(ome_tiff(seed=41))
    (tmp_path / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 64)
    researcher.set_input_files("#files", [str(tmp_path / "good.ome.tif"), str(tmp_path / "broken.tif")])
    researcher.click("#import")
    researcher.locator("#rows .state-failed").wait_for(timeout=60_000)

    staff = sign_in(browser, served, "sam")
    db = Database(f"sqlite:///{embedded_stack['PORTAL_DATA_DIR']}/portal.sqlite")
    with db.session() as session:
        session.execute(sa.update(User).where(User.username == "sam").values(is_staff=True))
        session.commit()
    db.dispose()
    staff.goto(served + "/staff")
    staff.locator("#jobs tbody tr", has_text="good.ome.tif").locator(".state-imported").wait_for(timeout=60_000)
    assert staff.locator("#jobs tbody tr", has_text="alice").count() == 2
    assert staff.locator("#alarm").is_hidden()  # `serve` runs a worker
    staff.select_option("#filters select[name=state]", "failed")
    staff.locator("#jobs tbody tr").first.wait_for()
    # a function, not an expression: Playwright evals expressions in the page, which our CSP forbids
    staff.wait_for_function("() => document.querySelectorAll('#jobs tbody tr').length === 1", timeout=60_000)
    shot(staff, "staff-dashboard")
    staff.locator("#jobs tbody tr a").first.click()
    assert "broken.tif" in staff.inner_text("body")
    shot(staff, "staff-job")
    staff.goto(served + "/staff/usage")
    assert staff.locator("svg").count() == 3
    shot(staff, "staff-usage")
    researcher.goto(served + "/staff")
    assert "Facility staff only" in researcher.content() or researcher.title().startswith("403")
