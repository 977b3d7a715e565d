"""The upload page in headless Chromium (Debian's, driven by Playwright) against `upload-portal serve`
on embedded defaults, with its worker and the real converters. Screenshots go to test-artifacts/."""
import base64
import hashlib
import re

import pytest

from tests.browser_helpers import MICROSCOPE_PC, ROWS, badge, copy_samples, row, shot, sign_in, state, wait_for_state
from tests.helpers import SAMPLES, ome_tiff, wait_until

SESSION = {  # name in the folder -> sample it is a copy of
    "fei_example_tem_stack.emd": "fei_example_tem_stack.emd",
    "Camera Ceta Imaging Micro.emd": "Camera Ceta Imaging Micro.emd",
    "128x128_TEM_acquire-sum1.emi": "128x128_TEM_acquire-sum1.emi",
    "128x128_TEM_acquire-sum1_1.ser": "128x128_TEM_acquire-sum1_1.ser",
    "test_tiff_Zeiss_SEM_1k.tif": "test_tiff_Zeiss_SEM_1k.tif",
    "FEI-Helios-Ebeam-8bits.tif": "FEI-Helios-Ebeam-8bits.tif",
    "orphan_1.ser": "16x16_STEM_BF_DF_acquire_1.ser",
}
EXPECTED = {  # a row, by a name it shows -> its final state, and what its details say
    "fei_example_tem_stack.emd": ("imported", "Titan / 2019-12-05"),
    "Camera Ceta Imaging Micro.emd": ("imported", "Titan / 2020-07-29"),
    "128x128_TEM_acquire-sum1_1.ser": ("imported", "TalosF200X"),
    "test_tiff_Zeiss_SEM_1k.tif": ("imported", "Merlin / 2015-12-23"),
    "FEI-Helios-Ebeam-8bits.tif": ("imported", "Helios NanoLab 660 / 2016-06-13"),
    "odd name.ome.tif": ("imported", "Talos L120C / 2024-06-01"),
    "orphan_1.ser": ("notsent", "needs its orphan.emi"),
}


def test_a_researcher_imports_a_folder_of_samples_and_watches_every_row(browser, served, tmp_path):
    folder = copy_samples(tmp_path / "session-42", SESSION)
    (folder / "<img src=x onerror=alert(1)>odd name.ome.tif").write_bytes(
        ome_tiff(seed=32, microscope="Talos L120C", acquired="2024-06-01T12:00:00+00:00"))
    (folder / "notes.txt").write_text("grid 7, 300 kV")

    page = sign_in(browser, served, "alice")
    assert page.locator("#group option").all_inner_texts() == ["Lab", "Facility"]  # the default group first
    page.fill("#pair-value-1", "Grid 7")
    page.set_input_files("#folder", str(folder))
    page.locator(ROWS).nth(6).wait_for()
    assert page.locator(ROWS).count() == 7  # the EMI and its SER are one row; the notes are skipped
    assert page.inner_text("#skipped summary") == "1 file skipped: .txt files"
    assert row(page, "128x128_TEM_acquire-sum1.emi").locator(".names div").all_inner_texts() == [
        "session-42/128x128_TEM_acquire-sum1.emi", "session-42/128x128_TEM_acquire-sum1_1.ser"]
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert page.inner_text("#summary") == f"9 files, {total / 1e6:.1f} MB: 6 to import, 1 cannot be sent, 1 skipped"
    assert badge(page, "orphan_1.ser")[0] == "Not sent" and "orphan.emi" in row(page, "orphan_1.ser").inner_text()
    assert state(page, "fei_example_tem_stack.emd") == "pending"
    shot(page, "upload-before")

    page.click("#import")
    page.locator("#batch-summary:not([hidden])").wait_for(timeout=180_000)
    for name, (final, detail) in EXPECTED.items():
        assert state(page, name) == final, (name, row(page, name).inner_text())
        assert detail in row(page, name).inner_text()
    assert page.inner_text("#batch-summary").startswith(
        "Import finished: 6 imported, 0 already in OMERO, 0 failed, 1 not sent, 1 to check (pixel size unknown).")
    label, symbol, colour = badge(page, "fei_example_tem_stack.emd")
    assert (label, symbol, colour) == ("Imported", '"✓"', "rgb(185, 230, 179)")  # label, icon and green
    assert "1 image, originals kept" in row(page, "128x128_TEM_acquire-sum1_1.ser").inner_text()
    held = row(page, "128x128_TEM_acquire-sum1_1.ser").locator("details.held")
    held.locator("summary").click()  # the detail: every original, each a download of OMERO's copy
    ser = held.locator("a", has_text="128x128_TEM_acquire-sum1_1.ser (")
    ser.wait_for()
    assert page.request.get(served + ser.get_attribute("href")).body() == (
        SAMPLES / "128x128_TEM_acquire-sum1_1.ser").read_bytes()
    # imported without a pixel size: still imported, but marked, never plain green, with the reason
    assert state(page, "odd name.ome.tif") == "imported"
    assert badge(page, "odd name.ome.tif")[:2] == ("Imported, check", '"⚠"')
    assert "check: pixel size unknown" in row(page, "odd name.ome.tif").inner_text()
    label, symbol, colour = badge(page, "orphan_1.ser")
    assert (label, symbol) == ("Not sent", '"⊘"') and colour != "rgb(185, 230, 179)"
    # a name is text, never markup: the only pictures are the thumbnails the page made
    assert page.locator("#rows img").evaluate_all("imgs => imgs.every((i) => i.parentElement.className === 'thumbs')")
    assert page.locator("#rows img[src*='/thumbnail']").count() >= 5
    assert "Sample = Grid 7" in page.inner_text("#batch-info") and "Folder = session-42" in page.inner_text("#batch-info")
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
    shot(page, "upload-after")
    page.set_viewport_size({"width": 1920, "height": 1080})
    shot(page, "upload-after-1920x1080")
    page.set_viewport_size(MICROSCOPE_PC)

    link = row(page, "fei_example_tem_stack.emd").locator("a", has_text="Open in OMERO").get_attribute("href")
    store = page.context.new_page()
    store.goto(served + link)
    body = store.inner_text("body")
    assert "Sample = Grid 7" in body and "Folder = session-42" in body and "Titan" in body
    store.close()

    # A second import: one file already in OMERO, one broken; the value used before is offered.
    again = copy_samples(tmp_path / "session-43", {"stack again.emd": "fei_example_tem_stack.emd"})
    (again / "broken.tif").write_bytes(b"II*\x00" + b"\xff" * 64)
    page.set_input_files("#folder", str(again))
    page.locator(ROWS).nth(1).wait_for()
    assert page.locator(ROWS).count() == 2 and page.is_enabled("#pair-value-1")
    page.wait_for_function("() => document.querySelector('#pair-values-1 option')?.value === 'Grid 7'")
    page.fill("#pair-value-1", "Grid 8")
    page.click("#import")
    page.locator("#batch-summary:not([hidden])").wait_for(timeout=120_000)
    assert badge(page, "stack again.emd")[:2] == ("Already in OMERO", '"≡"')
    assert row(page, "stack again.emd").locator("a", has_text="Open the existing image").get_attribute("href") == link
    assert state(page, "broken.tif") == "failed" and "broken.tif is truncated" in row(page, "broken.tif").inner_text()
    assert page.inner_text("#batch-summary").startswith("Import finished: 0 imported, 1 already in OMERO, 1 failed.")

    # A file that cannot be read fails the same way again: Retry is not offered
    assert row(page, "broken.tif").get_by_role("button", name="Retry session-43/broken.tif").count() == 0
    assert page.errors == []

    other = sign_in(browser, served, "bob")
    assert other.locator(ROWS).count() == 0 and other.inner_text("#summary") == "No files chosen yet."
    other.wait_for_function("() => document.querySelector('#pair-hint-1').textContent !== ''")
    assert other.locator("#pair-values-1 option").count() == 0  # alice's values are hers
    assert other.request.get(served + "/api/batches").json() == {"batches": []}
    other.goto(served + "/store")
    assert "fei_example_tem_stack" not in other.inner_text("body")


def big_ome_tiff(path, megabytes: int):
    import numpy as np
    import tifffile

    pixels = np.zeros((megabytes, 1024, 1024), np.uint8)
    pixels[:, 0, :8] = np.random.default_rng(7).integers(0, 255, (megabytes, 8))
    tifffile.imwrite(path, pixels, ome=True, metadata={"axes": "ZYX"})
    return path


def test_a_reload_mid_transfer_resumes_from_the_servers_offset(browser, served, tmp_path):
    folder = tmp_path / "big-run"
    folder.mkdir()
    big = big_ome_tiff(folder / "big.ome.tif", 200)
    small = folder / "small.ome.tif"
    small.write_bytes(ome_tiff(seed=5))
    files = [str(big), str(small)]

    page = sign_in(browser, served, "carol")
    puts = []
    page.on("request", lambda r: r.method == "PUT" and puts.append(r.url))
    page.set_input_files("#files", files)
    page.locator(ROWS).nth(1).wait_for()
    page.click("#import")

    api = page.context.request
    batch_id = None

    def big_file():
        nonlocal batch_id
        if batch_id is None:
            batch_id = api.get(served + "/api/batches").json()["batches"][0]["id"]
        jobs = api.get(f"{served}/api/batches/{batch_id}").json()["jobs"]
        return next(f for j in jobs for f in j["files"] if f["name"] == "big.ome.tif")

    page.wait_for_function("() => document.querySelector('tr[data-state=sending] progress')?.value >= 10")
    shot(page, "upload-during")
    # the row counts bytes that left the browser: the server's count may lag a little behind it
    held_before = wait_until(lambda: big_file()["received"], what="bytes held by the server")
    assert held_before < big.stat().st_size

    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.type), d.accept()))
    page.reload()  # closing or reloading mid-transfer asks first
    assert dialogs == ["beforeunload"]
    page.wait_for_selector("body[data-ready=true]")
    sent_before_reload = len(puts)
    page.locator("#resume-hint").wait_for()
    assert state(page, "big.ome.tif") == "pending" and page.inner_text("#import") == "Resume sending"
    assert re.search(r"\d MB of 209.7 MB already on the server", row(page, "big.ome.tif").inner_text())
    # the cut request may still be landing its last block: the server's count only grows from here
    assert big_file()["received"] >= held_before and not big_file()["complete"]
    shot(page, "upload-resume")

    page.set_input_files("#files", files)  # the same files again: sending goes on by itself
    page.locator(f"{ROWS}[data-state=sending]").wait_for()
    page.context.set_offline(True)  # the network drops mid-file...
    page.locator(f"{ROWS}[data-state=offline]", has_text="The connection dropped").wait_for(timeout=30_000)
    assert badge(page, "big.ome.tif")[:2] == ("Waiting for network", '"⚠"')
    shot(page, "upload-offline")
    page.context.set_offline(False)  # ...and comes back: sending goes on by itself
    page.locator("#batch-summary:not([hidden])").wait_for(timeout=180_000)
    assert page.inner_text("#batch-summary").startswith(  # the generated OME-TIFFs say nothing of their origin
        "Import finished: 2 imported, 0 already in OMERO, 0 failed, "
        "2 to check (acquisition date unknown, microscope unknown, pixel size unknown).")
    big_id = big_file()["id"]
    after = [url for url in puts[sent_before_reload:] if f"/api/files/{big_id}?" in url]
    # went on from what the server held when the page asked (at least what it held before the reload:
    # a block still landing then may move it on, and a PUT the server finds behind is refused, 409)...
    assert int(after[0].rsplit("offset=", 1)[1]) >= held_before
    assert not [url for url in after if url.endswith("offset=0")]  # ...and never started over
    assert big_file()["complete"]
    assert page.errors == []


def test_a_slow_link_shows_the_bytes_leaving_before_any_chunk_is_acknowledged(browser, served_without_worker, tmp_path):
    """On a 10 Mbit/s link an 8 MiB chunk takes seconds: the row follows the bytes that left, not the
    chunks the server acknowledged. The first chunk's answer is held in the browser (DevTools protocol,
    paused at the response) until the row shows progress, so no timing decides the outcome."""
    big = big_ome_tiff(tmp_path / "slow.ome.tif", 12)
    page = sign_in(browser, served_without_worker, "erin")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions",
             {"offline": False, "latency": 20, "downloadThroughput": -1, "uploadThroughput": 1.25e6})
    paused, released = [], []

    def answer_arrived(event):  # the first chunk's answer: it reaches the page once released
        paused.append(event["requestId"])
        if released:
            cdp.send("Fetch.continueRequest", {"requestId": event["requestId"]})

    cdp.on("Fetch.requestPaused", answer_arrived)
    cdp.send("Fetch.enable", {"patterns": [{"urlPattern": "*/api/files/*offset=0", "requestStage": "Response"}]})
    page.set_input_files("#files", str(big))
    page.locator(f"{ROWS}[data-state=pending]").wait_for()
    page.click("#import")

    page.wait_for_function("() => document.querySelector('tr[data-state=sending] progress')?.value > 0")
    sent = re.search(r"slow.ome.tif: ([\d.]+) (KB|MB) of [\d.]+ MB sent", row(page, "slow.ome.tif").inner_text())
    assert sent and float(sent[1]) > 0, row(page, "slow.ome.tif").inner_text()
    shot(page, "upload-slow-link")
    released.append(True)
    for request_id in list(paused):
        cdp.send("Fetch.continueRequest", {"requestId": request_id})
    cdp.send("Network.emulateNetworkConditions",
             {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    wait_for_state(page, "slow.ome.tif", "queued")  # every byte on the server, checked
    assert len(paused) == 1  # the first chunk's answer was held, and only it
    assert page.errors == []


@pytest.mark.parametrize("webcrypto", [True, False], ids=["webcrypto", "plain-http"])
def test_each_chunk_carries_its_digest_where_the_browser_hashes_natively(browser, served_without_worker, tmp_path,
                                                                       webcrypto):
    """With WebCrypto (HTTPS, localhost) each chunk carries its SHA-256 and the file completes without
    the whole-file SHA-1 (WebAssembly, slower than a fast link); without it (plain HTTP elsewhere) the
    page hashes the file and completes with that. Either way the server's SHA-1 is the file's."""
    big = big_ome_tiff(tmp_path / "digest.ome.tif", 20)  # three chunks of 8 MiB
    page = sign_in(browser, served_without_worker, "frank")
    if not webcrypto:
        page.add_init_script("Object.defineProperty(globalThis, 'isSecureContext', { value: false })")
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
    digests, completes = [], []
    page.on("request", lambda r: r.method == "PUT" and digests.append((r.url, r.headers.get("content-digest"))))
    page.on("request", lambda r: r.url.endswith("/complete") and completes.append(r.post_data_json))
    page.set_input_files("#files", str(big))
    page.locator(f"{ROWS}[data-state=pending]").wait_for()
    page.click("#import")
    wait_for_state(page, "digest.ome.tif", "queued")

    data, chunk = big.read_bytes(), 8 << 20
    expected = {offset: f"sha-256=:{base64.b64encode(hashlib.sha256(data[offset:offset + chunk]).digest()).decode()}:"
                for offset in range(0, len(data), chunk)}
    sent = {int(url.rsplit("offset=", 1)[1]): digest for url, digest in digests}
    assert sent == (expected if webcrypto else dict.fromkeys(expected))
    assert completes == ([{}] if webcrypto else [{"sha1": hashlib.sha1(data).hexdigest()}])
    batch = page.context.request.get(served_without_worker + "/api/batches").json()["batches"][0]
    held = page.context.request.get(f"{served_without_worker}/api/batches/{batch['id']}").json()
    assert held["jobs"][0]["files"][0]["sha1"] == hashlib.sha1(data).hexdigest()
    assert page.errors == []


def test_the_page_completes_with_the_sha1_when_the_server_cannot_vouch_for_the_chunks(browser, served_without_worker,
                                                                                     tmp_path):
    """A server restarted mid-file forgets which chunks it checked and asks for the SHA-1 (409
    sha1_needed, here answered by the browser's own interception): the page hashes the file then."""
    small = tmp_path / "restart.ome.tif"
    small.write_bytes(ome_tiff(seed=11))
    page = sign_in(browser, served_without_worker, "grace")
    completes = []

    def restarted_server(route):
        completes.append(route.request.post_data_json)
        if len(completes) == 1:
            return route.fulfill(status=409, json={"error": "Send the file's SHA-1", "code": "sha1_needed"})
        return route.continue_()

    page.route("**/api/files/*/complete", restarted_server)
    page.set_input_files("#files", str(small))
    page.locator(f"{ROWS}[data-state=pending]").wait_for()
    page.click("#import")
    wait_for_state(page, "restart.ome.tif", "queued")
    assert completes == [{}, {"sha1": hashlib.sha1(small.read_bytes()).hexdigest()}]


def test_small_files_travel_together_and_a_large_one_alone(browser, served, tmp_path):
    """A small file's time is its round trips: several go at once. A large one (over three chunks) goes
    alone, so it is finished, and converted, while the next travels. A new file starts without asking
    the server how much it holds."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    files = [big_ome_tiff(folder / "a_big.ome.tif", 30)]
    for i in range(8):
        files.append(folder / f"b_small_{i}.ome.tif")
        files[-1].write_bytes(ome_tiff(seed=300 + i))

    page = sign_in(browser, served, "dora")
    flying, puts, asked = {}, [], []  # file id -> its PUTs on their way; (file id, others on their way)

    def file_id(request):
        return re.search(r"/api/files/(\d+)", request.url)[1]

    def started(request):
        if request.method == "PUT" and "/api/files/" in request.url:
            puts.append((file_id(request), {f for f, n in flying.items() if n and f != file_id(request)}))
            flying[file_id(request)] = flying.get(file_id(request), 0) + 1
        elif request.method == "GET" and re.search(r"/api/files/\d+$", request.url):
            asked.append(request.url)

    def ended(request):
        if request.method == "PUT" and "/api/files/" in request.url:
            flying[file_id(request)] -= 1

    page.on("request", started)
    page.on("requestfinished", ended)
    page.on("requestfailed", ended)
    page.set_input_files("#files", [str(f) for f in files])
    page.locator(ROWS).nth(8).wait_for()
    page.click("#import")
    page.locator("#batch-summary:not([hidden])").wait_for(timeout=180_000)
    assert page.inner_text("#batch-summary").startswith("Import finished: 9 imported")

    big = puts[0][0]
    assert sum(1 for f, _ in puts if f == big) == 4  # 30 MiB in 8 MiB chunks
    assert all(not others for f, others in puts if f == big)  # nothing else travelled beside it
    assert all(big not in others for f, others in puts if f != big)  # nor after it began
    assert any(others for f, others in puts if f != big)  # small files overlapped
    assert asked == []  # every file was new: no request asked where to start
    assert page.errors == []


def test_remove_clear_cancel_and_drop_with_the_keyboard(browser, served_without_worker, tmp_path):
    base = served_without_worker
    files = []
    for n, name in enumerate(["a.ome.tif", "b.ome.tif", "c.ome.tif"]):
        (tmp_path / name).write_bytes(ome_tiff(seed=40 + n))
        files.append(str(tmp_path / name))
    page = sign_in(browser, base, "dave")
    choosers = []
    page.on("filechooser", lambda chooser: choosers.append(chooser))  # subscribe early: Playwright intercepts choosers from then on
    page.locator("#group").focus()

    page.keyboard.press("Tab")  # a keyboard user reaches the pickers and opens one with Enter
    while page.evaluate("() => document.activeElement.id") != "pick-files":
        page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    wait_until(lambda: choosers or page.wait_for_timeout(50), timeout=30, what="the file chooser")
    choosers[0].set_files(files)
    page.locator(ROWS).nth(2).wait_for()
    row(page, "b.ome.tif").get_by_role("button", name="Remove b.ome.tif").click()
    page.wait_for_function("() => document.querySelectorAll('#rows tbody tr').length === 2")
    assert page.inner_text("#summary").startswith("2 files")
    page.click("#clear")
    page.wait_for_function("() => document.querySelectorAll('#rows tbody tr').length === 0")
    assert page.is_disabled("#import")

    # Drag and drop: two dropped files, one of which cannot be sent alone
    page.evaluate("""() => {
        const data = new DataTransfer();
        data.items.add(new File(['x'], 'lonely.emi'));
        data.items.add(new File(['y'], 'notes.txt'));
        const zone = document.getElementById('drop-zone');
        zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: data, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
    }""")
    page.locator(ROWS).nth(1).wait_for()
    assert state(page, "lonely.emi") == "notsent" and "lonely_1.ser" in row(page, "lonely.emi").inner_text()
    assert page.is_disabled("#import")  # nothing can be sent
    page.click("#clear")

    page.set_input_files("#files", [files[0], files[2]])
    page.locator(ROWS).nth(1).wait_for()
    page.focus("#import")
    page.keyboard.press("Enter")
    wait_for_state(page, "a.ome.tif", "queued", timeout=30_000)
    wait_for_state(page, "c.ome.tif", "queued", timeout=30_000)
    assert badge(page, "a.ome.tif")[:2] == ("Queued", '"◷"')
    cancel = row(page, "a.ome.tif").get_by_role("button", name="Cancel a.ome.tif")
    cancel.focus()
    page.keyboard.press("Enter")
    wait_for_state(page, "a.ome.tif", "cancelled", timeout=30_000)
    assert state(page, "c.ome.tif") == "queued"
    assert row(page, "a.ome.tif").locator("button").count() == 0
    assert page.errors == []

    # The help page's legend: every state has a label, a symbol and a colour, one colour per meaning
    page.click("header >> text=Help")
    page.wait_for_load_state("load")  # the stylesheet too: the legend's symbols come from it
    legend = page.locator(".legend tbody tr").evaluate_all("""rows => rows.map(r => {
        const b = r.querySelector('.state');
        return [b.textContent, getComputedStyle(b, '::before').content, getComputedStyle(b).backgroundColor,
                r.children[1].textContent]; })""")
    assert len(legend) == 12
    for label, symbol, background, _colour in legend:
        assert label and symbol not in ("none", "normal", '""') and background != "rgba(0, 0, 0, 0)", label
    by_name = {}
    for _label, _symbol, background, colour in legend:
        by_name.setdefault(colour, set()).add(background)
    assert len({frozenset(v) for v in by_name.values()}) == len(by_name) == 6  # gray yellow cyan green orange red
    assert "28 days" in page.inner_text("#retention")
    shot(page, "help")


def test_each_imported_image_and_spectrum_shows_its_picture_in_rows_history_and_staff(browser, served, embedded_stack,
                                                                                     tmp_path):
    from tests.browser_helpers import make_staff

    folder = copy_samples(tmp_path / "pictures", {"stack.emd": "fei_example_tem_stack.emd",
                                                  "eds.emd": "SI_empty_selection.emd", "carbon.dm3": "08_carbon.dm3"})
    page = sign_in(browser, served, "pia")
    page.set_input_files("#folder", str(folder))
    page.locator(ROWS).nth(2).wait_for()
    page.click("#import")
    page.locator("#batch-summary:not([hidden])").wait_for(timeout=180_000)
    loaded = "imgs => imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0)"

    def pictures(where, name):
        shown = where.locator("tr", has_text=name).locator(".thumbs img")
        shown.first.wait_for()
        where.wait_for_function(f"() => ({loaded})([...document.querySelectorAll('tr .thumbs img')])")
        return shown.evaluate_all("imgs => imgs.map((i) => [i.getAttribute('src'), i.naturalWidth, i.naturalHeight])")

    stack = pictures(page, "stack.emd")
    assert len(stack) == 1 and "/thumbnail" in stack[0][0] and max(stack[0][1:]) == 96  # OMERO's size, its shape
    eds = pictures(page, "eds.emd")  # an image and its spectra: their plots beside it
    assert any("/thumbnail" in src for src, *_ in eds) and any("/plots/" in src for src, *_ in eds)
    assert pictures(page, "carbon.dm3")  # a spectrum alone: its plot
    shot(page, "thumbnails-rows")

    page.goto(served + "/history")
    page.wait_for_selector("body[data-ready=true]")
    page.locator("#history details.batch summary").first.click()
    assert pictures(page, "stack.emd")[0][0] == stack[0][0]
    shot(page, "thumbnails-history")

    make_staff(embedded_stack, "pia")
    page.goto(served + "/staff")
    assert pictures(page, "stack.emd")[0][0] == stack[0][0]
    shot(page, "thumbnails-staff")
    other = sign_in(browser, served, "quinn")  # another researcher gets none of them
    assert other.request.get(served + stack[0][0]).status == 404
    assert page.errors == [] and other.errors == []


def test_a_direct_electron_folder_gives_its_info_file_to_each_image(browser, served, tmp_path):
    """One info file beside three MRCs of its acquisition: three rows each showing it, the selection
    counted once, each job sent its own copy and each image under the camera and the info's date."""
    from datetime import UTC, datetime

    from tests.converters.test_mrc import de_acquisition

    folder = tmp_path / "de-run"
    de_acquisition(folder)
    page = sign_in(browser, served, "erin")
    puts = []
    page.on("request", lambda r: r.method == "PUT" and "/api/files/" in r.url and puts.append(r.url))
    page.set_input_files("#folder", str(folder))
    page.locator(ROWS).nth(2).wait_for()
    assert page.locator(ROWS).count() == 3
    summary = page.inner_text("#summary")  # the info file counted once
    assert summary.startswith("4 files, ") and summary.endswith(": 3 to import"), summary
    for name in ("Custom_movie.mrc", "Custom_final.mrc", "Custom_0_HAADF_sum.mrc"):
        assert row(page, name).locator(".names div").all_inner_texts() == [f"de-run/{name}", "de-run/Custom_info.txt"]
    page.click("#import")
    page.locator("#batch-summary:not([hidden])").wait_for(timeout=180_000)
    assert page.inner_text("#batch-summary").startswith("Import finished: 3 imported, 0 already in OMERO, 0 failed")
    day = datetime.fromtimestamp(1745955900, UTC).date().isoformat()  # Custom_info.txt's Timestamp
    for name in ("Custom_movie.mrc", "Custom_final.mrc", "Custom_0_HAADF_sum.mrc"):
        assert state(page, name) == "imported" and f"DESim / {day}" in row(page, name).inner_text(), name
    assert len(set(puts)) == 6  # each job's two files: the info file went once per job
    assert page.errors == []
