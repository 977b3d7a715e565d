"""Malformed input through the real API and a real worker: every broken file or name fails its own row
with its own message, every refused request says why, and the good files beside them still import."""
import base64
import hashlib
import re

import pytest

from app.core.staging import safe_name
from converters.grouping import group_files
from tests.converters import broken_files as broken
from tests.helpers import ome_tiff, wait_until

FINAL = {"imported", "duplicate", "failed", "cancelled"}

# Content the converters refuse (tests/converters/broken_files.py), sent through the portal.
CONTENT = [(build.__name__, build, message) for build, message in broken.CORPUS if build is not broken.missing_file]
# Pairs the grouping rule already refuses are refused when the import is created, in its words.
AT_CREATION = {"empty": r"^x\.emd is empty \(0 bytes\): there is nothing to import; copy it again",
               "ser_alone": r"^t_1\.ser needs its t\.emi in the same folder$",
               "ser_of_another_emi": r"^t\.emi has no \.ser file \(expected t_1\.ser beside it\)$"}

GOOD_TIFF = ome_tiff(seed=7)
# Names the portal will not import, each refused with its reason (the file is not sent at all), and
# how the portal shows the name: escaped, never with the raw character.
NAMES = [
    ("traversal", "../../etc/passwd.tif", None, r"a name must be a path inside the chosen folder, without '\.\.'"),
    ("absolute", "/etc/shadow.tif", None, r"without '\.\.' or a leading '/'$"),
    ("windows traversal", "..\\..\\boot.tif", None, r"a name must be a path inside the chosen folder"),
    ("empty component", "run//x.tif", None, r"a name must be a path inside the chosen folder"),
    ("escape sequence", "a\x1b[31mred.tif", "a\\x1b[31mred.tif", r"the name holds control or text-direction"),
    ("newline", "line\nbreak.tif", "line\\x0abreak.tif", r"the name holds control"),
    ("nul", "nul\x00.tif", "nul\\x00.tif", r"the name holds control"),
    ("right-to-left override", "evil\u202egpj.tif", "evil\\u202egpj.tif", r"the name holds control or text-direction"),
    ("not UTF-8", "caf\udce9.tif", "caf\\xe9.tif", r"the name is not valid UTF-8"),
    ("unsupported", "notes.docx", None, r"^notes\.docx: files \.docx are not supported"),
    ("no extension", "README", None, r"^README: files without an extension are not supported"),
    ("not an mrc", "pair/a.mrc", None, r"^a\.mrc is not a valid MRC file: its content starts with the bytes"),
]


def finished(portal, batch_id):
    jobs = portal.batch(batch_id)["jobs"]
    return jobs if all(job["state"] in FINAL for job in jobs) else None


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_each_malformed_file_fails_its_own_row_and_the_good_ones_import(portal, worker, tmp_path):
    alice = portal("alice")
    earlier = alice.send({"earlier.ome.tif": ome_tiff(seed=6)})  # queued before the bad batch arrives

    files, expected = {}, {}
    for case, build, message in CONTENT:
        folder = tmp_path / case
        folder.mkdir()
        paths = build(folder)
        for path in paths:
            files[f"{case}/{path.name}"] = path.read_bytes()
        expected[f"{case}/{paths[0].name}"] = AT_CREATION.get(case, message)
    for _case, name, shown, message in NAMES:
        files[name] = GOOD_TIFF if name.endswith(".tif") else b"some bytes"
        expected[shown or name] = message
    files["good/one.ome.tif"] = ome_tiff(seed=8)
    files["good/two.ome.tif"] = ome_tiff(seed=9)
    assert len(expected) >= 30

    files["pair/b.xml"] = b"<MicroscopeImage/>"  # another MRC's XML: not an image of its own, so skipped
    batch = alice.send(files, folder=None)
    assert {"name": "pair/b.xml", "reason": ".xml files without an .mrc"} in batch["skipped"]
    worker.start()
    jobs = wait_until(lambda: finished(alice, batch["id"]), timeout=300, interval=0.5, what="every job to end")
    by_name = {job["files"][0]["name"]: job for job in jobs}
    problems = [(name, by_name.get(name)) for name, message in expected.items()
                if name not in by_name or by_name[name]["state"] != "failed"
                or not re.search(message, by_name[name]["message"])]
    assert not problems, "\n".join(f"{name!r}: {job} (expected {expected[name]!r})" for name, job in problems)
    assert by_name["good/one.ome.tif"]["state"] == by_name["good/two.ome.tif"]["state"] == "imported"
    assert finished(alice, earlier["id"])[0]["state"] == "imported"


@pytest.fixture
def alice_waiting(embedded_app):
    """Alice signed in, with one file half-sent: a refused request must not touch it."""
    from tests.helpers import Portal

    alice = Portal(embedded_app.test_client(), "alice")
    data = ome_tiff(seed=21)
    batch = alice.new_batch({"waiting.ome.tif": data})
    remote = batch["jobs"][0]["files"][0]
    assert alice.put(f"/api/files/{remote['id']}?offset=0", data=data[:100]).status_code == 200
    alice.waiting = (remote["id"], data)
    return alice


def batch_body(alice, files, **fields):
    return {"group_id": alice.me["groups"][0]["id"], "files": files} | fields


REQUESTS = [
    ("duplicate name", lambda a, f: a.post("/api/batches", json=batch_body(a, [
        {"name": "x.tif", "size": 10}, {"name": "x.tif", "size": 20}])), 400, r"^x\.tif is listed twice"),
    ("folder traversal", lambda a, f: a.post("/api/batches", json=batch_body(a, [{"name": "x.tif", "size": 1}],
                                                                             folder="../up")),
     400, r"^folder must be the name of one folder"),
    ("negative size", lambda a, f: a.post("/api/batches", json=batch_body(a, [{"name": "x.tif", "size": -1}])),
     400, r"^Each file needs a name and a size in bytes$"),
    ("no files", lambda a, f: a.post("/api/batches", json=batch_body(a, [])), 400, r"^files must list between 1"),
    ("not JSON", lambda a, f: a.post("/api/batches", data="{nope", content_type="application/json"), 400,
     r"^Send a JSON object$"),
    ("bytes past the declared size", lambda a, f: a.put(f"/api/files/{f}?offset=100", data=b"x" * 10**6), 400,
     r"^More bytes were sent than the file's declared size$"),
    ("wrong offset", lambda a, f: a.put(f"/api/files/{f}?offset=7", data=b"xyz"), 409, r"."),
    ("complete too early", lambda a, f: a.post(f"/api/files/{f}/complete", json={"sha1": "0" * 40}), 409,
     r"^The server holds 100 of [\d,]+ bytes: send the rest first$"),
]


@pytest.mark.parametrize("case, send, status, message", REQUESTS, ids=[r[0] for r in REQUESTS])
def test_a_malformed_request_is_refused_with_its_reason_and_touches_nothing(alice_waiting, case, send, status,
                                                                            message):
    file_id, data = alice_waiting.waiting
    response = send(alice_waiting, file_id)
    assert response.status_code == status, response.get_data(as_text=True)
    assert re.search(message, response.get_json()["error"]), response.get_json()
    # the half-sent file is intact: it resumes at 100 bytes and completes
    assert alice_waiting.get(f"/api/files/{file_id}").get_json()["received"] == 100
    assert alice_waiting.put(f"/api/files/{file_id}?offset=100", data=data[100:]).status_code == 200
    done = alice_waiting.post(f"/api/files/{file_id}/complete", json={"sha1": hashlib.sha1(data).hexdigest()})
    assert done.status_code == 200, done.get_json()


def test_a_damaged_transfer_is_dropped_and_sent_again(alice_waiting):
    """Chunks checked by their digest give the server its own SHA-1: a client's that differs is
    refused, the bytes dropped, and the file sent again."""
    data = ome_tiff(seed=22)
    file_id = alice_waiting.new_batch({"checked.ome.tif": data})["jobs"][0]["files"][0]["id"]
    digest = {"Content-Digest": f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"}
    alice_waiting.put(f"/api/files/{file_id}?offset=0", data=data, headers=digest)
    wrong = alice_waiting.post(f"/api/files/{file_id}/complete", json={"sha1": hashlib.sha1(b"other").hexdigest()})
    assert wrong.status_code == 422
    assert wrong.get_json()["error"] == "The file arrived damaged (its SHA-1 does not match): it will be sent again"
    assert alice_waiting.get(f"/api/files/{file_id}").get_json()["received"] == 0
    alice_waiting.put(f"/api/files/{file_id}?offset=0", data=data, headers=digest)
    assert alice_waiting.post(f"/api/files/{file_id}/complete",
                              json={"sha1": hashlib.sha1(data).hexdigest()}).status_code == 200


LONG = "session " + "é" * 120 + " overview"  # 250 bytes in UTF-8: over the 200 a staged name may take


@pytest.mark.parametrize("name, ends", [(f"{LONG}.ome.tiff", ".ome.tiff"), (f"{LONG}.dm4", ".dm4"),
                                        (f"{LONG}_12.ser", "_12.ser")])
def test_a_long_name_is_cut_before_its_extension(name, ends):
    stored = safe_name(name)
    assert len(stored.encode()) <= 200 and stored.endswith(ends) and stored.startswith("session éé")


def test_a_long_tia_groups_files_still_belong_together_after_cutting():
    stored = [safe_name(f"{LONG}{end}") for end in (".emi", "_1.ser", "_10.ser")]
    assert [grp.files for grp in group_files(stored)] == [stored]
