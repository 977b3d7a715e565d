"""The day-to-day pages in headless Chromium against `upload-portal serve`: history, a real session
folder with its junk, the layout at 1366x768 and at 400 px, staff tools. Screenshots go to
test-artifacts/."""
import sqlalchemy as sa

from app.core.db import Database
from app.core.models import Job, User
from tests.browser_helpers import ROWS, copy_samples, make_staff, shot, sign_in, wait_for_state
from tests.helpers import ome_tiff

LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 400, "height": 800}


def no_sideways_scrolling(page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


def test_a_session_folder_with_junk_imports_its_images_and_skips_the_rest(browser, served, tmp_path):  # noqa: F811
    folder = copy_samples(tmp_path / "session-9", {"b.emd": "fei_example_tem_stack.emd"})
    copy_samples(folder / "a", {"ceta.emd": "Camera Ceta Imaging Micro.emd"})
    for junk, data in {".DS_Store": b"\0" * 6148, "Thumbs.db": b"\0" * 20, "desktop.ini": b"[.ShellClassInfo]",
                       "notes.txt": b"grid 7", "export.csv": b"x,y"}.items():
        (folder / junk).write_bytes(data)

    page = sign_in(browser, served, "erin", LAPTOP)
    page.set_input_files("#folder", str(folder))
    page.locator(ROWS).nth(1).wait_for()
    assert page.locator(ROWS).count() == 2  # only the images are rows, sorted by path
    assert [n.split("/", 1)[1] for n in page.locator(f"{ROWS} td.names .primary").all_inner_texts()] == ["a/ceta.emd", "b.emd"]
    skipped = page.locator("#skipped")
    assert skipped.locator("summary").inner_text() == "5 files skipped: system files, .csv files, .txt files"
    assert not skipped.locator("li").first.is_visible()  # collapsed: one line
    assert page.inner_text("#summary").endswith("2 to import, 5 skipped")
    page.click("#import")
    page.locator("#batch-summary:not([hidden])").wait_for(timeout=180_000)
    assert page.inner_text("#batch-summary").startswith("Import finished: 2 imported, 0 already in OMERO, 0 failed.")
    assert "all-good" in page.get_attribute("#batch-summary", "class")  # the junk does not turn it red
    skipped.locator("summary").click()
    assert "session-9/.DS_Store (system files)" in skipped.inner_text()
    shot(page, "folder-with-junk")
    assert page.errors == []


def test_history_lists_earlier_imports_with_their_jobs_filters_and_pages(browser, served, tmp_path):  # noqa: F811
    page = sign_in(browser, served, "fay", LAPTOP)
    # imported but to check is marked as its row is (never red); a failure is red
    for name, data, tone, symbol in (("first.ome.tif", ome_tiff(seed=61), "to-check", '"⚠ "'),
                                     ("broken.tif", b"II*\x00" + b"\xff" * 64, "with-problems", '"! "')):
        (tmp_path / name).write_bytes(data)
        page.set_input_files("#files", str(tmp_path / name))
        page.locator(f"{ROWS}[data-state=pending]").wait_for()
        page.click("#import")
        page.locator("#batch-summary:not([hidden])").wait_for(timeout=120_000)
        assert page.get_attribute("#batch-summary", "class").split()[-1] == tone
        assert page.locator("#batch-summary").evaluate("b => getComputedStyle(b, '::before').content") == symbol

    page.click("header >> text=History")
    page.wait_for_selector("body[data-ready=true]")
    batches = page.locator("#history details.batch")
    assert batches.count() == 2 and page.inner_text("#history-count") == "2 imports, newest first."
    assert "1 failed" in batches.nth(0).locator("summary").inner_text()  # newest first
    # first.ome.tif has no acquisition date: imported, and counted as one to check, never plain green
    assert batches.nth(1).locator("summary .state-check").inner_text() == "1 imported, to check"
    batches.nth(0).locator("summary").click()
    failed = batches.nth(0).locator("tr[data-state=failed]")
    failed.wait_for()
    assert "broken.tif is truncated" in failed.inner_text() and failed.get_by_role("button", name="Retry").count() == 0
    batches.nth(1).locator("summary").click()
    imported = batches.nth(1).locator("tr[data-state=imported]")
    imported.wait_for()
    assert imported.locator("a", has_text="Open in OMERO").count() == 1
    shot(page, "history")

    page.select_option("#history-filters select[name=state]", "check")
    page.click("#history-filters button")
    page.wait_for_function("() => document.querySelectorAll('#history details.batch').length === 1")
    assert "state=check" in page.url
    assert page.locator("#history details.batch summary .state-check").count() == 1
    page.select_option("#history-filters select[name=state]", "failed")
    page.click("#history-filters button")
    page.wait_for_function("() => document.querySelectorAll('#history details.batch .state-check').length === 0")
    assert "state=failed" in page.url
    page.fill("#history-filters input[name=q]", "first.ome")
    page.click("#history-filters button")
    page.wait_for_function("() => document.querySelector('#history-count').textContent === 'No import matches.'")
    page.go_back()  # the filters live in the URL
    page.wait_for_function("() => document.querySelectorAll('#history details.batch').length === 1")
    page.set_viewport_size(PHONE)
    page.goto(served + "/history")
    page.wait_for_selector("body[data-ready=true]")
    page.locator("#history details.batch").nth(0).locator("summary").click()
    page.locator("#history tr[data-state=failed]").wait_for()
    assert no_sideways_scrolling(page)
    shot(page, "history-400px")
    assert page.errors == []


def test_the_file_list_shows_during_an_import_at_1366x768_and_pages_fit_400px(
        browser, served_without_worker, embedded_stack, tmp_path):  # noqa: F811
    base = served_without_worker
    files = []
    for n in range(4):
        (tmp_path / f"img{n}.ome.tif").write_bytes(ome_tiff(seed=70 + n))
        files.append(str(tmp_path / f"img{n}.ome.tif"))
    page = sign_in(browser, base, "gus", LAPTOP)
    page.fill("#pair-value-1", "Liver 3")
    page.set_input_files("#files", files)
    page.locator(ROWS).nth(3).wait_for()
    page.click("#import")
    for n in range(4):
        wait_for_state(page, f"img{n}.ome.tif", "queued", timeout=60_000)  # no worker: they wait
    assert "collapsed" in page.get_attribute("#batch-form", "class")
    assert page.locator("#group").is_hidden() and page.locator("#pick-files").is_visible()
    bottom = page.locator(ROWS).nth(3).evaluate("r => r.getBoundingClientRect().bottom")
    assert bottom <= LAPTOP["height"], f"the fourth row ends at y={bottom}"  # the list is in view
    shot(page, "upload-1366x768-importing")
    colours = page.evaluate("""() => ['sending', 'converting'].map((state) => {
        const named = JSON.parse(document.getElementById('states').textContent)[state].colour;  // as rows.js does
        const b = document.createElement('span'); b.className = `state state-${state} colour-${named}`;
        document.body.append(b);
        const colour = getComputedStyle(b).backgroundColor; b.remove(); return colour; })""")
    assert colours == ["rgb(178, 235, 242)"] * 2  # uploading is cyan, as converting and importing

    page.set_viewport_size(PHONE)
    assert no_sideways_scrolling(page)
    name_width = page.locator(f"{ROWS} td.names").first.evaluate("c => c.getBoundingClientRect().width")
    assert name_width > 200  # a name reads as a name, not a letter per line
    shot(page, "upload-400px")

    make_staff(embedded_stack, "gus")
    for path in ("/staff", "/staff/usage", "/staff/retention", "/staff/microscopes", "/tokens", "/help", "/history"):
        page.goto(base + path)
        assert no_sideways_scrolling(page), path
        sign_out = page.locator("header button", has_text="Sign out").evaluate("b => b.getBoundingClientRect().right")
        assert sign_out <= PHONE["width"], path
    page.goto(base + "/staff")
    page.locator("#jobs tbody tr").first.wait_for()
    assert page.locator("#jobs tbody tr").first.get_by_role("button", name="Move to front").count() == 0  # embedded broker
    shot(page, "staff-400px")
    assert page.errors == []


def test_staff_import_for_a_user_from_the_staff_page(browser, served, embedded_stack, tmp_path):  # noqa: F811
    staff = sign_in(browser, served, "sam", LAPTOP)
    make_staff(embedded_stack, "sam")
    staff.goto(served + "/staff")
    staff.fill("#import-as input[name=as]", "gina")
    staff.click("#import-as button")
    staff.wait_for_selector("body[data-ready=true]")
    assert staff.inner_text("#import-as").startswith("Importing for gina")
    assert staff.locator("#group option").all_inner_texts() == ["Lab", "Facility"]  # gina's groups
    staff.select_option("#group", label="Facility")
    (tmp_path / "for-gina.ome.tif").write_bytes(ome_tiff(seed=80))
    staff.set_input_files("#files", str(tmp_path / "for-gina.ome.tif"))
    staff.locator(f"{ROWS}[data-state=pending]").wait_for()
    staff.click("#import")
    wait_for_state(staff, "for-gina.ome.tif", "imported")  # followed live through the staff stream
    shot(staff, "staff-import-as")

    staff.set_viewport_size(PHONE)
    staff.goto(served + "/staff/usage")
    assert no_sideways_scrolling(staff)
    cut = staff.evaluate("""() => [...document.querySelectorAll('.charts svg text')].filter((t) => {
        const box = t.getBoundingClientRect(), svg = t.ownerSVGElement.getBoundingClientRect();
        return box.left < svg.left - 0.5 || box.right > svg.right + 0.5; }).map((t) => t.textContent)""")
    assert staff.locator(".charts svg text").count() > 6 and cut == []  # every chart label whole
    shot(staff, "staff-usage-400px")

    gina = sign_in(browser, served, "gina", LAPTOP)
    gina.goto(served + "/history")
    gina.wait_for_selector("body[data-ready=true]")
    assert "group Facility" in gina.locator("#history details.batch").first.inner_text()
    gina.goto(served + "/store")
    assert "for-gina.ome.tif" in gina.inner_text("body")
    assert staff.errors == [] and gina.errors == []


def test_retry_from_history_after_signing_in_again(browser, served, embedded_stack, tmp_path):  # noqa: F811
    page = sign_in(browser, served, "hal", LAPTOP)
    db = Database(f"sqlite:///{embedded_stack['PORTAL_DATA_DIR']}/portal.sqlite")
    with db.session() as session:  # hal's OMERO session ends while his file waits
        session.execute(sa.update(User).where(User.username == "hal").values(omero_key=None))
        session.commit()
    db.dispose()
    (tmp_path / "later.ome.tif").write_bytes(ome_tiff(seed=90))
    page.set_input_files("#files", str(tmp_path / "later.ome.tif"))
    page.locator(f"{ROWS}[data-state=pending]").wait_for()
    page.click("#import")
    wait_for_state(page, "later.ome.tif", "failed")

    page = sign_in(browser, served, "hal", LAPTOP)  # signs in again: a fresh OMERO session
    page.goto(served + "/history")
    page.wait_for_selector("body[data-ready=true]")
    page.locator("#history details.batch summary").first.click()
    failed = page.locator("#history tr[data-state=failed]")
    failed.wait_for()
    assert "sign in again" in failed.inner_text()
    failed.get_by_role("button", name="Retry later.ome.tif").click()
    # the row and its import's counts follow the job live, without a reload
    page.locator("#history tr[data-state=imported]").wait_for(timeout=120_000)
    summary = page.locator("#history details.batch summary .counts").first
    page.wait_for_function("() => !document.querySelector('#history details.batch summary .counts').textContent.includes('failed')")
    assert "1 imported" in summary.inner_text() and "Open in OMERO" in page.inner_text("#history tr[data-state=imported]")
    shot(page, "history-after-retry")
    assert page.errors == []


def test_a_long_name_imports_and_wraps_in_every_table_at_1366_and_400px(browser, served, embedded_stack, tmp_path):  # noqa: F811
    long = "Liver3_grid7_" + "abcdefghij" * 22  # 233 characters without a space: over the 200 bytes a staged name may take
    good_file, broken_file = tmp_path / f"{long}.ome.tif", tmp_path / f"{long}_broken.tif"
    good_file.write_bytes(ome_tiff(seed=95, microscope="Thermo Scientific Talos F200X G2 (TITAN52336320, room B.204)"))
    broken_file.write_bytes(b"II*\x00" + b"\xff" * 64)
    page = sign_in(browser, served, "lena", LAPTOP)
    page.set_input_files("#files", [str(good_file), str(broken_file)])
    page.locator(ROWS).nth(1).wait_for()
    page.click("#import")
    page.locator("#batch-summary:not([hidden])").wait_for(timeout=120_000)
    good, broken = page.locator(ROWS, has_text="Liver3").all()
    assert good.get_attribute("data-state") == "imported"  # the extension survived the cut
    link = good.locator("a", has_text="Open in OMERO").get_attribute("href")
    assert broken.get_attribute("data-state") == "failed" and f"{long}_broken.tif is truncated" in broken.inner_text()
    assert good.locator(".names .primary").get_attribute("title") == f"{long}.ome.tif"

    def fits(what):
        widest = page.evaluate("() => Math.max(...[...document.querySelectorAll('table')].map((t) => t.getBoundingClientRect().right))")
        assert no_sideways_scrolling(page) and widest <= page.viewport_size["width"], (what, widest)

    fits("upload at 1366")
    shot(page, "long-name-1366")
    page.set_viewport_size(PHONE)
    fits("upload at 400")
    shot(page, "long-name-400")

    page.set_viewport_size(LAPTOP)
    page.goto(served + "/history")
    page.wait_for_selector("body[data-ready=true]")
    page.locator("#history details.batch summary").first.click()
    page.locator("#history tr[data-state=failed]").wait_for()
    fits("history at 1366")
    shot(page, "long-name-history-1366")
    page.set_viewport_size(PHONE)
    fits("history at 400")
    for path in ("/store", link):  # "My images": each value keeps its label in one block per image
        page.goto(served + path)
        fits(path)
        assert page.locator("td[data-label=Project]").first.evaluate(
            "c => getComputedStyle(c, '::before').content") == '"Project: "'
    shot(page, "store-image-400")

    make_staff(embedded_stack, "lena")
    page.set_viewport_size(LAPTOP)
    page.goto(served + "/staff")
    page.locator("#jobs tbody tr", has_text="Liver3").nth(1).wait_for()
    fits("staff at 1366")
    actions = page.locator("#jobs tbody tr", has_text="_broken.tif").get_by_role("button", name="Free its bytes")
    assert actions.evaluate("b => b.getBoundingClientRect().right") <= LAPTOP["width"]  # State and Actions in view
    shot(page, "staff-long-name-1366")
    page.set_viewport_size(PHONE)
    fits("staff at 400")
    microscope = page.locator("#filters select[name=microscope]").evaluate("s => s.getBoundingClientRect().right")
    assert microscope <= PHONE["width"]
    shot(page, "staff-long-name-400")
    assert page.errors == []


def test_a_cancel_that_lost_the_race_leaves_no_error_and_the_fields_come_back(browser, served_without_worker,
                                                                              embedded_stack, tmp_path):  # noqa: F811
    base = served_without_worker
    (tmp_path / "raced.ome.tif").write_bytes(ome_tiff(seed=97))
    page = sign_in(browser, base, "ray", LAPTOP)
    page.set_input_files("#files", str(tmp_path / "raced.ome.tif"))
    page.locator(f"{ROWS}[data-state=pending]").wait_for()
    page.click("#import")
    wait_for_state(page, "raced.ome.tif", "queued", timeout=60_000)
    assert page.locator("#group").is_hidden()  # while the import runs, its settings are folded away
    # meanwhile a worker found the file in OMERO already; its event has not reached the page when Cancel is pressed
    db = Database(f"sqlite:///{embedded_stack['PORTAL_DATA_DIR']}/portal.sqlite")
    with db.session() as session:
        session.execute(sa.update(Job).values(state="duplicate", message="Already in OMERO as image 7"))
        session.commit()
    db.dispose()
    page.get_by_role("button", name="Cancel raced.ome.tif").click()
    wait_for_state(page, "raced.ome.tif", "duplicate")
    assert page.locator("#message").is_hidden()  # the refusal is not left behind: the row says what happened
    assert page.locator("#group").is_visible() and page.locator("#group").is_enabled()  # ready for the next import
    assert page.locator("#pair-value-1").is_enabled()
    page.goto(base + "/history")
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#history details.batch summary .counts").inner_text().strip() == "1 already in OMERO"
    assert page.errors == []


def test_files_chosen_by_hand_beside_a_folder_keep_the_folders_key_value(browser, served_without_worker, tmp_path):  # noqa: F811
    base = served_without_worker
    (tmp_path / "loose.ome.tif").write_bytes(ome_tiff(seed=98))
    folder = tmp_path / "session-5"
    folder.mkdir()
    (folder / "inside.ome.tif").write_bytes(ome_tiff(seed=99))
    page = sign_in(browser, base, "kai", LAPTOP)
    page.set_input_files("#files", str(tmp_path / "loose.ome.tif"))
    page.locator(ROWS).first.wait_for()
    page.set_input_files("#folder", str(folder))  # added to the same import
    page.locator(ROWS).nth(1).wait_for()
    page.click("#import")
    wait_for_state(page, "inside.ome.tif", "queued", timeout=60_000)
    assert "Folder = session-5" in page.inner_text("#batch-info")
    batch = page.request.get(base + "/api/batches").json()["batches"][0]
    assert batch["folder"] == "session-5"  # the workers put it on the folder's images only (tests/test_pipeline.py)
    assert page.errors == []
