"""The API behind the upload page's checks: /api/plan (grouping before any byte is sent) and
/api/key-values (values already used, read from OMERO), with per-user and per-group isolation."""
import re

import pytest

from app.core.models import User
from tests.helpers import Portal, ome_tiff
from workers import pipeline


@pytest.fixture
def alice(embedded_app):
    return Portal(embedded_app.test_client(), "alice")


def plan(portal, files: dict[str, int]):
    return portal.post("/api/plan", json={"files": [{"name": n, "size": s} for n, s in files.items()]})


def test_plan_groups_partners_and_names_what_is_missing(alice):
    response = plan(alice, {
        "run/acq.emi": 100, "run/acq_1.ser": 1000, "run/acq_2.ser": 2000,  # one TIA group, SERs in order
        "run/grid.mrc": 5000, "run/grid.xml": 50,
        "run/orphan_1.ser": 10, "other/acq_3.ser": 7,  # partners must be in the same folder
        "run/lonely.emi": 3, "run/notes.txt": 4, "run/a.tif": 9,
    })
    assert response.status_code == 200
    body = response.get_json()
    groups = {tuple(f["name"] for f in grp["files"]): grp for grp in body["groups"]}
    assert groups[("run/acq.emi", "run/acq_1.ser", "run/acq_2.ser")]["error"] is None
    assert groups[("run/acq.emi", "run/acq_1.ser", "run/acq_2.ser")]["size"] == 3100
    assert groups[("run/grid.mrc", "run/grid.xml")]["kind"] == "mrc_xml"
    assert "orphan.emi" in groups[("run/orphan_1.ser",)]["error"]
    assert "acq.emi" in groups[("other/acq_3.ser",)]["error"]
    assert "lonely_1.ser" in groups[("run/lonely.emi",)]["error"]
    assert groups[("run/notes.txt",)]["error"] is None and groups[("run/notes.txt",)]["skipped"] == ".txt files"
    assert groups[("run/a.tif",)]["error"] is None
    assert (body["count"], body["total_size"], body["importable"], body["skipped"]) == (10, 8183, 3, 1)


SESSION_FOLDER = {  # a real session folder: the data and what Windows, macOS and people leave beside it
    "s/.DS_Store": 6148, "s/Thumbs.db": 20, "s/desktop.ini": 3, "s/._a.emd": 4096, "s/~$notes.docx": 162,
    "s/__MACOSX/a.emd": 10, "s/.hidden/b.emd": 10, "s/notes.txt": 4, "s/export.csv": 9, "s/README": 7,
    "s/settings.xml": 30, "s/a.emd": 100, "s/lonely.mrc": 50,
}


def test_a_folders_system_files_and_other_formats_are_skipped_not_failed(alice):
    body = plan(alice, SESSION_FOLDER).get_json()
    skipped = {grp["files"][0]["name"]: grp["skipped"] for grp in body["groups"] if grp["skipped"]}
    assert skipped == {
        "s/.DS_Store": "system files", "s/Thumbs.db": "system files", "s/desktop.ini": "system files",
        "s/._a.emd": "system files", "s/~$notes.docx": "system files", "s/__MACOSX/a.emd": "system files",
        "s/.hidden/b.emd": "system files", "s/notes.txt": ".txt files", "s/export.csv": ".csv files",
        "s/README": "files without an extension", "s/settings.xml": ".xml files without an .mrc",
    }
    assert all(grp["error"] is None for grp in body["groups"] if grp["skipped"])
    assert not [grp for grp in body["groups"] if grp["error"]]  # an MRC alone is the researcher's data, read alone
    assert (body["importable"], body["skipped"]) == (2, 11)


def test_files_chosen_by_hand_keep_their_reason(alice):
    body = plan(alice, {"notes.txt": 4, "Thumbs.db": 20, "a.emd": 100}).get_json()
    errors = {grp["files"][0]["name"]: grp["error"] for grp in body["groups"]}
    # chosen by hand, a .txt is taken for an image's sidecar and says which image it lacks
    assert "only as the metadata beside an image (notes.tif in the same folder)" in errors["notes.txt"]
    assert "not supported" in errors["Thumbs.db"]
    assert body["skipped"] == 0


def test_a_batch_of_a_folder_makes_jobs_only_for_what_it_reads(alice):
    batch = alice.new_batch({"s/.DS_Store": b"x" * 10, "s/notes.txt": b"grid 7", "s/b.ome.tif": ome_tiff(seed=3),
                             "s/a.ome.tif": ome_tiff(seed=4)})
    assert [job["files"][0]["name"] for job in batch["jobs"]] == ["s/a.ome.tif", "s/b.ome.tif"]  # by path
    assert batch["skipped"] == [{"name": "s/.DS_Store", "reason": "system files"},  # in the order given
                                {"name": "s/notes.txt", "reason": ".txt files"}]
    everything_skipped = alice.post("/api/batches", json={"group_id": alice.me["groups"][0]["id"],
                                                          "files": [{"name": "s/Thumbs.db", "size": 3}]})
    assert everything_skipped.status_code == 400 and "system files" in everything_skipped.get_json()["error"]


def test_an_empty_file_is_not_ready_to_import_and_says_why_before_any_byte(alice):
    body = plan(alice, {"s/empty.emd": 0, "s/a.emd": 10, "s/.DS_Store": 0}).get_json()
    errors = {grp["files"][0]["name"]: grp["error"] for grp in body["groups"]}
    assert errors["s/empty.emd"].startswith("empty.emd is empty (0 bytes): there is nothing to import")
    assert errors["s/a.emd"] is None and errors["s/.DS_Store"] is None  # system files are skipped, not refused
    assert (body["importable"], body["skipped"]) == (1, 1)
    batch = alice.new_batch({"s/empty.emd": b"", "s/a.ome.tif": ome_tiff(seed=5)})
    states = {job["files"][0]["name"]: (job["state"], job["can_retry"]) for job in batch["jobs"]}
    assert states == {"s/a.ome.tif": ("uploading", False), "s/empty.emd": ("failed", False)}


def test_plan_flags_a_file_over_the_limit_and_creates_nothing(alice, embedded_app):
    embedded_app.config["MAX_FILE_SIZE"] = 1000
    body = plan(alice, {"big.emd": 1001, "small.emd": 1000}).get_json()
    errors = {grp["files"][0]["name"]: grp["error"] for grp in body["groups"]}
    assert "1,001 bytes" in errors["big.emd"] and errors["small.emd"] is None
    assert alice.get("/api/batches").get_json() == {"batches": []}


@pytest.mark.parametrize("body", [None, {}, {"files": []}, {"files": [{"name": "a.tif"}]},
                                  {"files": [{"name": "", "size": 1}]}, {"files": "a.tif"}])
def test_plan_refuses_bad_input_with_a_reason(alice, body):
    response = alice.post("/api/plan", json=body)
    assert response.status_code == 400 and response.get_json()["error"]


def test_plan_and_key_values_need_a_signed_in_user(embedded_app):
    client = embedded_app.test_client()
    assert client.get("/api/key-values?group_id=1&key=Sample").status_code == 401
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    response = client.post("/api/plan", json={"files": [{"name": "a.tif", "size": 1}]}, headers={"X-CSRFToken": token})
    assert response.status_code == 401 and "groups" not in response.get_json()


def set_groups(app, username, groups):
    with app.extensions["services"].db.session() as db:
        user = db.query(User).filter_by(username=username).one()
        user.groups = groups
        db.commit()


def key_values(portal, group_id, key="Sample"):
    return portal.get("/api/key-values", query_string={"group_id": group_id, "key": key})


def test_key_values_are_the_users_own_in_that_group(embedded_app, alice):
    lab, facility = (grp["id"] for grp in alice.me["groups"])
    for seed, value in ((1, "Liver 3"), (2, "Kidney"), (3, "Liver 3")):
        batch = alice.send({f"a{seed}.ome.tif": ome_tiff(seed=seed)}, key_values=[["Sample", value]])
        with embedded_app.app_context():
            assert pipeline.run_job(embedded_app.extensions["services"], batch["jobs"][0]["id"], "w1") == "imported"

    response = key_values(alice, lab)
    assert response.status_code == 200
    assert response.get_json() == {"group_id": lab, "key": "Sample", "values": ["Kidney", "Liver 3"]}
    assert key_values(alice, facility).get_json()["values"] == []
    bob = Portal(embedded_app.test_client(), "bob")
    assert key_values(bob, lab).get_json()["values"] == []  # the same group, another user's values


def test_key_values_of_a_group_the_user_is_not_in_are_refused(embedded_app, alice):
    lab, facility = (grp["id"] for grp in alice.me["groups"])
    set_groups(embedded_app, "alice", [{"id": lab, "name": "Lab"}])
    refused = key_values(alice, facility)
    assert refused.status_code == 403 and "your OMERO groups" in refused.get_json()["error"]
    assert key_values(alice, "x").status_code == 403

    # The portal's list of groups could be stale: OMERO itself refuses a group the user is not in.
    set_groups(embedded_app, "alice", [{"id": lab, "name": "Lab"}, {"id": 4242, "name": "Ghost"}])
    refused = key_values(alice, 4242)
    assert refused.status_code == 403 and "4242" in refused.get_json()["error"]


def test_key_values_only_for_the_facilitys_keys(embedded_app, alice):
    lab = alice.me["groups"][0]["id"]
    assert alice.me["batch_keys"] == ["Sample"]
    response = key_values(alice, lab, key="Password")
    assert response.status_code == 400 and "Sample" in response.get_json()["error"]
    batch = alice.post("/api/batches", json={"group_id": lab, "key_values": [["Colour", "red"]],
                                             "files": [{"name": "a.tif", "size": 1}]})
    assert batch.status_code == 400 and "'Colour' is not a key" in batch.get_json()["error"]


def test_key_values_with_an_expired_omero_session_ask_to_sign_in_again(embedded_app, alice):
    with embedded_app.extensions["services"].db.session() as db:
        db.query(User).filter_by(username="alice").one().omero_key = "not-a-token"
        db.commit()
    response = key_values(alice, alice.me["groups"][0]["id"])
    assert response.status_code == 401 and "sign in again" in response.get_json()["error"]
