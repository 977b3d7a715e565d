"""The page hashes files in a Web Worker (hash-wasm under the page's CSP) and asks before sending:
a file OMERO already holds ends "Already in OMERO" without a byte sent."""
from tests.browser_helpers import ROWS, badge, row, sign_in, wait_for_state
from tests.helpers import ome_tiff


def test_a_file_omero_already_holds_is_not_sent_again(browser, served, tmp_path):  # noqa: F811
    content = ome_tiff(seed=41)
    first, again = tmp_path / "run.ome.tif", tmp_path / "again" / "run copy.ome.tif"
    again.parent.mkdir()
    first.write_bytes(content)
    again.write_bytes(content)

    page = sign_in(browser, served, "dora")
    page.set_input_files("#files", str(first))
    page.locator(f"{ROWS}[data-state=pending]").wait_for()
    page.click("#import")
    wait_for_state(page, "run.ome.tif", "imported")

    puts = []
    page.on("request", lambda r: r.method == "PUT" and puts.append(r.url))
    page.set_input_files("#files", str(again))  # the last import has ended: this starts a new one
    page.locator(f"{ROWS}[data-state=pending]", has_text="run copy.ome.tif").wait_for()
    page.click("#import")
    wait_for_state(page, "run copy.ome.tif", "duplicate")
    assert puts == []
    assert badge(page, "run copy.ome.tif")[0] == "Already in OMERO"
    assert "nothing was sent" in row(page, "run copy.ome.tif").inner_text()
    assert page.errors == []  # no CSP refusal of the hashing worker's WebAssembly, no script error
