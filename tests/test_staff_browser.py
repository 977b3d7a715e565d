"""The staff dashboard in headless Chromium: every user's jobs live, a failure's diagnostics, and the
alarm while no worker runs. Screenshots go to test-artifacts/."""
from tests.browser_helpers import make_staff, shot, sign_in
from tests.helpers import ome_tiff


def test_staff_watch_all_users_jobs_and_open_a_failure(browser, served, embedded_stack, tmp_path):  # noqa: F811
    researcher = sign_in(browser, served, "alice")
    (tmp_path / "good.ome.tif").write_bytes(ome_tiff(seed=41))
    (tmp_path / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 64)
    researcher.set_input_files("#files", [str(tmp_path / "good.ome.tif"), str(tmp_path / "broken.tif")])
    researcher.click("#import")
    researcher.locator("#rows .state-failed").wait_for(timeout=60_000)

    staff = sign_in(browser, served, "sam")
    make_staff(embedded_stack, "sam")
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
    staff.wait_for_url("**/staff/jobs/*")  # the job's own page, not the list still on screen
    assert "broken.tif" in staff.inner_text("body")
    assert staff.locator("h1 .state").evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(255, 180, 171)"  # red
    shot(staff, "staff-job")
    staff.once("dialog", lambda d: d.accept())  # asked first
    staff.get_by_role("button", name="Free its bytes").click()
    staff.locator("#job-actions button", has_text="Free its bytes").wait_for(state="detached")  # shown anew, freed
    staff.goto(served + "/staff/usage")
    assert staff.locator("svg").count() == 3
    shot(staff, "staff-usage")
    researcher.goto(served + "/staff")
    assert "Facility staff only" in researcher.content() or researcher.title().startswith("403")


def test_staff_cancel_a_live_upload_only_when_confirmed_and_the_researchers_page_stops_at_once(
        browser, served_without_worker, embedded_stack, tmp_path):  # noqa: F811
    base = served_without_worker
    researcher = sign_in(browser, base, "rita")
    held = []  # the upload's chunks are held on their way: the upload stays live until staff end it
    researcher.route("**/api/files/*?offset=*", lambda route: held.append(route))
    (tmp_path / "live.ome.tif").write_bytes(ome_tiff(seed=44))
    researcher.set_input_files("#files", str(tmp_path / "live.ome.tif"))
    researcher.locator("#rows tbody tr[data-state=pending]").wait_for()
    with researcher.expect_request(lambda r: r.method == "PUT"):
        researcher.click("#import")
    assert researcher.inner_text("#import") == "Sending…"

    staff = sign_in(browser, base, "stan")
    make_staff(embedded_stack, "stan")
    staff.goto(base + "/staff")
    live = staff.locator("#jobs tbody tr", has_text="live.ome.tif")
    live.wait_for()
    asked = []
    staff.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    live.get_by_role("button", name="Cancel").click()
    assert "Cancel job" in asked[0] and "rita" in asked[0] and "still on its way" in asked[0]
    assert live.locator(".state").inner_text() == "uploading"  # dismissed: nothing happened
    staff.once("dialog", lambda d: d.accept())
    live.get_by_role("button", name="Cancel").click()
    staff.locator("#jobs tbody tr", has_text="live.ome.tif").locator(".state-cancelled").wait_for()

    # the researcher's page hears it and stops its upload without waiting for the held chunks
    researcher.locator("#rows tbody tr[data-state=cancelled]").wait_for()
    researcher.wait_for_function("() => document.querySelector('#import').textContent !== 'Sending…'")
    assert "with-cancelled" in researcher.get_attribute("#batch-summary", "class")  # never green
    assert researcher.locator("#batch-summary").evaluate("b => getComputedStyle(b, '::before').content") == '"– "'
    assert held and researcher.errors == [] and staff.errors == []
