"""The history API behind /history: the user's own batches, newest first, filtered and paged."""
import sqlalchemy as sa

from app.core.models import User
from tests.helpers import SAMPLES, Portal, ome_tiff
from workers import pipeline


def test_history_lists_own_batches_newest_first_with_counts_filters_and_pages(app, monkeypatch):
    alice, bob = Portal(app.test_client(), "alice"), Portal(app.test_client(), "bob")
    first = alice.send({"run/a.ome.tif": ome_tiff(seed=1), "run/notes.txt": b"x"}, key_values=[["Sample", "Liver 3"]])
    second = alice.send({"b.ome.tif": ome_tiff(seed=2), "broken.tif": b"II*\x00" + bytes(64)})
    bob.send({"c.ome.tif": ome_tiff(seed=3)})
    with app.app_context():
        for job in first["jobs"] + second["jobs"]:
            pipeline.run_job(app.extensions["services"], job["id"], "w:1")

    listed = alice.get("/api/history").get_json()
    assert [b["id"] for b in listed["batches"]] == [second["id"], first["id"]]  # bob's is not there
    assert (listed["total"], listed["page"], listed["pages"]) == (2, 1, 1)
    assert listed["batches"][0]["states"] == {"imported": 1, "failed": 1}
    assert listed["batches"][1]["states"] == {"imported": 1} and listed["batches"][1]["jobs"] == 1  # notes.txt skipped
    assert listed["batches"][1]["key_values"] == [["Sample", "Liver 3"]] and listed["batches"][1]["group_name"] == "Lab"

    def ids(query):
        return [b["id"] for b in alice.get(f"/api/history?{query}").get_json()["batches"]]

    assert ids("state=failed") == [second["id"]]
    assert ids("q=liver") == [first["id"]]  # a key-value
    assert ids("q=BROKEN") == [second["id"]]  # a file name, any case
    assert ids("q=truncated+or+damaged") == [second["id"]]  # the failure's message
    assert ids("q=100%25") == []  # % is text, not a wildcard
    assert alice.get("/api/history?state=bogus").status_code == 400
    assert alice.get("/api/history?page=0").status_code == 400

    monkeypatch.setattr("app.history.PER_PAGE", 1)
    page2 = alice.get("/api/history?page=2").get_json()
    assert [b["id"] for b in page2["batches"]] == [first["id"]] and page2["pages"] == 2


def test_imports_to_check_are_counted_apart_and_can_be_found(app):
    """An import whose date, microscope or pixel size is unknown counts as imported, and says so."""
    alice = Portal(app.test_client(), "alice")
    sample = lambda name: (SAMPLES / name).read_bytes()  # noqa: E731
    plain = alice.send({"Camera Ceta Imaging Micro.emd": sample("Camera Ceta Imaging Micro.emd")})  # all known
    mixed = alice.send({"STEM HAADF Diffraction Micro.emd": sample("STEM HAADF Diffraction Micro.emd"),
                        "berkeley_example_image.emd": sample("berkeley_example_image.emd")})  # no date, no microscope
    with app.app_context():
        for job in plain["jobs"] + mixed["jobs"]:
            pipeline.run_job(app.extensions["services"], job["id"], "w:1")
    berkeley = alice.get(f"/api/jobs/{mixed['jobs'][1]['id']}").get_json()
    assert berkeley["state"] == "imported" and "acquisition date unknown" in berkeley["warnings"]

    listed = {b["id"]: b for b in alice.get("/api/history").get_json()["batches"]}
    assert (listed[mixed["id"]]["states"], listed[mixed["id"]]["to_check"]) == ({"imported": 2}, 1)
    assert (listed[plain["id"]]["states"], listed[plain["id"]]["to_check"]) == ({"imported": 1}, 0)
    recent = {b["id"]: b["to_check"] for b in alice.get("/api/batches").get_json()["batches"]}
    assert recent == {mixed["id"]: 1, plain["id"]: 0}
    assert [b["id"] for b in alice.get("/api/history?state=check").get_json()["batches"]] == [mixed["id"]]
    assert [b["id"] for b in alice.get("/api/history?state=imported").get_json()["batches"]] == [mixed["id"], plain["id"]]


def test_history_page_is_linked_from_the_header(embedded_app):
    alice = Portal(embedded_app.test_client(), "alice")
    page = alice.get("/").get_data(as_text=True)
    assert '<a href="/history">History</a>' in page
    assert 'id="history-filters"' in alice.get("/history").get_data(as_text=True)
    with embedded_app.extensions["services"].db.session() as db:
        assert db.scalar(sa.select(sa.func.count(User.id))) == 1
