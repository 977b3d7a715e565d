"""The job pipeline, called directly: placement, duplicates by content, idempotent reruns, failures."""
import hashlib

import pytest

from app.core.models import Job
from app.core.omero.base import ServerUnreachable
from tests.helpers import SAMPLES, Portal, ome_tiff
from workers import pipeline


@pytest.fixture
def alice(embedded_app):
    return Portal(embedded_app.test_client(), "alice")


def run(app, job_id, worker="w1"):
    with app.app_context():
        return pipeline.run_job(app.extensions["services"], job_id, worker)


def job(app, job_id):
    with app.extensions["services"].db.session() as db:
        return db.get(Job, job_id)


def images(app, username):
    return app.extensions["services"].omero.images_of(username)


def test_an_ome_tiff_lands_under_microscope_and_date_with_its_annotations(embedded_app, alice):
    data = ome_tiff(seed=1, microscope="Talos L120C", acquired="2024-03-05T23:30:00+00:00")
    batch = alice.send({"run/a.ome.tif": data}, key_values=[["Sample", "Liver 3"]], folder="run")
    job_id = batch["jobs"][0]["id"]
    assert run(embedded_app, job_id) == "imported"
    done = job(embedded_app, job_id)
    assert (done.project, done.dataset, done.state) == ("Talos L120C", "2024-03-05", "imported")
    (image,) = images(embedded_app, "alice")
    assert (image["project"], image["dataset"], image["name"]) == ("Talos L120C", "2024-03-05", "a.ome.tif")
    annotations = image["annotations"]
    kv = annotations["key_values"]["openmicroscopy.org/omero/client/mapAnnotation"]
    assert kv == [["Sample", "Liver 3"], ["Folder", "run"]] and annotations["tags"] == ["Liver 3"]
    assert annotations["maps"]["upload-portal/provenance"]["job_uid"] == done.uid
    assert done.link == f"/store/image/{image['id']}"
    assert not embedded_app.extensions["services"].staging.job_dir(job_id).exists()  # bytes go once OMERO has them


def test_the_dataset_is_the_date_in_the_facilitys_zone(embedded_app, alice):
    from zoneinfo import ZoneInfo

    embedded_app.config["TZ"] = ZoneInfo("Europe/Stockholm")
    batch = alice.send({"a.ome.tif": ome_tiff(seed=2, acquired="2024-03-05T23:30:00+00:00")})
    run(embedded_app, batch["jobs"][0]["id"])
    assert job(embedded_app, batch["jobs"][0]["id"]).dataset == "2024-03-06"


def test_no_metadata_imports_under_names_that_say_so_and_warns(embedded_app, alice):
    batch = alice.send({"a.ome.tif": ome_tiff(seed=3)})
    run(embedded_app, batch["jobs"][0]["id"])
    done = job(embedded_app, batch["jobs"][0]["id"])
    assert (done.state, done.project, done.dataset) == ("imported", "unknown microscope", "unknown date")
    assert done.warnings == ["acquisition date unknown", "microscope unknown", "pixel size unknown"]
    assert done.message.endswith("; check: acquisition date unknown, microscope unknown, pixel size unknown")
    assert done.public()["warnings"] == done.warnings
    (image,) = images(embedded_app, "alice")
    assert (image["project"], image["dataset"]) == ("unknown microscope", "unknown date")


def test_same_content_under_another_name_is_a_duplicate_and_new_content_under_the_same_name_imports(embedded_app, alice):
    first, changed = ome_tiff(seed=4), ome_tiff(seed=5)
    same = bytes(first)  # the same file under another name (tifffile writes a fresh UUID each time)
    b1 = alice.send({"a.ome.tif": first})
    run(embedded_app, b1["jobs"][0]["id"])
    b2 = alice.send({"renamed.ome.tif": same})
    assert run(embedded_app, b2["jobs"][0]["id"]) == "duplicate"
    dup = job(embedded_app, b2["jobs"][0]["id"])
    original = job(embedded_app, b1["jobs"][0]["id"])
    assert dup.link == original.link and "Already in OMERO" in dup.message
    b3 = alice.send({"a.ome.tif": changed})
    assert run(embedded_app, b3["jobs"][0]["id"]) == "imported"
    assert len(images(embedded_app, "alice")) == 2


def test_another_users_identical_file_is_not_a_duplicate_of_mine(embedded_app, alice):
    data = ome_tiff(seed=6)
    run(embedded_app, alice.send({"a.ome.tif": data})["jobs"][0]["id"])
    bob = Portal(embedded_app.test_client(), "bob")
    assert run(embedded_app, bob.send({"a.ome.tif": data})["jobs"][0]["id"]) == "imported"


def test_a_rerun_after_a_crash_finishes_the_import_instead_of_repeating_it(embedded_app, alice):
    batch = alice.send({"a.ome.tif": ome_tiff(seed=7)})
    job_id = batch["jobs"][0]["id"]
    original_done = pipeline._done
    crash = RuntimeError("worker killed after OMERO took the image")

    def die(*args, **kwargs):
        raise crash

    pipeline._done = die
    try:
        with pytest.raises(RuntimeError):
            with embedded_app.app_context():
                pipeline._process(embedded_app.extensions["services"], *_claimed(embedded_app, job_id))
    finally:
        pipeline._done = original_done
    _expire_lease(embedded_app, job_id)
    assert run(embedded_app, job_id, "w2") == "imported"
    assert len(images(embedded_app, "alice")) == 1


def test_a_crash_between_the_import_and_its_mark_imports_again_and_keeps_one(embedded_app, alice, monkeypatch):
    """The import landed but the worker died before marking it complete: the rerun removes it whole."""
    job_id = alice.send({"a.ome.tif": ome_tiff(seed=8)})["jobs"][0]["id"]
    from app.core.omero.embedded import EmbeddedSession

    monkeypatch.setattr(EmbeddedSession, "mark_complete", lambda *a: (_ for _ in ()).throw(RuntimeError("killed")))
    assert run(embedded_app, job_id) == "failed"  # as a bug would: the row says so
    (first,) = images(embedded_app, "alice")
    monkeypatch.undo()
    with embedded_app.extensions["services"].db.session() as db:
        db.get(Job, job_id).state = "queued"
        db.commit()
    assert run(embedded_app, job_id, "w2") == "imported"
    (image,) = images(embedded_app, "alice")
    assert image["path"] != first["path"] and job(embedded_app, job_id).image_ids == [image["id"]]  # imported anew


def test_a_czi_of_three_scenes_is_one_job_of_three_images_listed_everywhere(embedded_app, alice):
    name = "S3_1Pos_2Mosaic_T1_Z1_CH1.czi"
    data = (SAMPLES / name).read_bytes()
    batch = alice.send({name: data})
    job_id = batch["jobs"][0]["id"]
    assert run(embedded_app, job_id) == "imported"
    stored = images(embedded_app, "alice")
    assert [i["name"] for i in stored] == [f"{name} [TR1]", f"{name} [P1]", f"{name} [TR2]"]
    assert len({i["path"] for i in stored}) == 1  # one fileset
    ids = [i["id"] for i in stored]
    record = alice.client.get(f"/api/jobs/{job_id}").get_json()
    assert record["image_ids"] == ids and [i["name"] for i in record["images"]] == [i["name"] for i in stored]
    assert record["summary"].startswith("3 images")
    (listed,) = alice.client.get(f"/api/batches/{batch['id']}").get_json()["jobs"]  # what the page and history show
    assert [i["id"] for i in listed["images"]] == ids
    again = alice.send({"again.czi": data})["jobs"][0]["id"]
    assert run(embedded_app, again) == "duplicate"
    assert job(embedded_app, again).image_ids == ids and len(images(embedded_app, "alice")) == 3


def _claimed(app, job_id):
    from app.core import jobs as job_states

    with app.extensions["services"].db.session() as db:
        claimed = job_states.claim(db, job_id, "w1", 60)
        claimed.batch, claimed.files  # noqa: B018 - loaded while the session is open
    return pipeline.Run(app.extensions["services"], claimed, "w1"), claimed


def _expire_lease(app, job_id):
    from datetime import datetime

    with app.extensions["services"].db.session() as db:
        db.get(Job, job_id).lease_expires = datetime(2000, 1, 1)
        db.commit()


def test_a_job_held_by_a_live_worker_is_not_run_twice(embedded_app, alice):
    batch = alice.send({"a.ome.tif": ome_tiff(seed=8)})
    job_id = batch["jobs"][0]["id"]
    _claimed(embedded_app, job_id)
    assert run(embedded_app, job_id, "w2") == "not claimable"
    _expire_lease(embedded_app, job_id)
    assert run(embedded_app, job_id, "w2") == "imported"
    assert run(embedded_app, job_id, "w3") == "not claimable"


def test_an_unreadable_file_fails_its_own_row_only(embedded_app, alice):
    batch = alice.send({"broken.tif": b"II*\x00garbage", "good.ome.tif": ome_tiff(seed=9)})
    outcomes = {j["files"][0]["name"]: run(embedded_app, j["id"]) for j in batch["jobs"]}
    assert outcomes == {"broken.tif": "failed", "good.ome.tif": "imported"}
    broken = job(embedded_app, batch["jobs"][0]["id"])
    assert "broken.tif" in broken.message and broken.progress == 0.0


def test_staged_bytes_that_changed_fail_with_a_clear_message(embedded_app, alice):
    batch = alice.send({"a.ome.tif": ome_tiff(seed=10)})
    job_id = batch["jobs"][0]["id"]
    (embedded_app.extensions["services"].staging.job_dir(job_id) / "a.ome.tif").write_bytes(b"tampered")
    assert run(embedded_app, job_id) == "failed"
    assert "no longer intact" in job(embedded_app, job_id).message


def test_a_file_completed_with_a_wrong_sha1_fails_before_anything_is_imported(embedded_app, alice):
    """Chunks without a digest are only written (the web process does not hash them): the SHA-1 the
    client completed the file with is checked by the worker before anything is imported."""
    data, other = ome_tiff(seed=14), ome_tiff(seed=15)
    batch = alice.new_batch({"a.ome.tif": data, "b.ome.tif": other})
    for remote, content, claimed in ((batch["jobs"][0]["files"][0], data, hashlib.sha1(other).hexdigest()),
                                     (batch["jobs"][1]["files"][0], other, hashlib.sha1(other).hexdigest())):
        assert alice.put(f"/api/files/{remote['id']}?offset=0", data=content).status_code == 200
        assert alice.post(f"/api/files/{remote['id']}/complete", json={"sha1": claimed}).status_code == 200
    wrong, right = (j["id"] for j in batch["jobs"])
    assert run(embedded_app, wrong) == "failed"
    assert ("a.ome.tif on the transfer server is not what was sent (its SHA-1 differs from the sender's)"
            in job(embedded_app, wrong).message)
    assert images(embedded_app, "alice") == []
    assert run(embedded_app, right) == "imported"  # its neighbour, of the content the wrong claim named


def test_bytes_that_change_after_the_check_are_not_reported_imported(embedded_app, alice, monkeypatch):
    """OMERO must hold the researcher's bytes (the SHA-1 the upload was completed with), not whatever
    the staged file holds by the time it is imported."""
    data = ome_tiff(seed=13)
    batch = alice.send({"a.ome.tif": data})
    job_id = batch["jobs"][0]["id"]
    convert = pipeline.converters.convert

    def convert_then_the_disk_flips_a_byte(paths, work, options):
        conversion = convert(paths, work, options)
        with open(paths[0], "r+b") as f:
            f.seek(len(data) - 1)
            f.write(bytes([data[-1] ^ 0xFF]))
        return conversion

    monkeypatch.setattr(pipeline.converters, "convert", convert_then_the_disk_flips_a_byte)
    assert run(embedded_app, job_id) == "failed"
    assert "does not match the file sent" in job(embedded_app, job_id).message
    assert images(embedded_app, "alice") == []  # the wrong copy is not left in OMERO
    assert job(embedded_app, job_id).can_retry  # as the message says (a copy damaged on its way may come whole)
    assert alice.post(f"/api/jobs/{job_id}/retry").status_code == 200
    monkeypatch.setattr(pipeline.converters, "convert", convert)
    assert run(embedded_app, job_id) == "failed"  # the staged copy itself changed: the retry says so
    assert "a.ome.tif on the transfer server is not what was sent" in job(embedded_app, job_id).message


def test_an_unreachable_omero_is_retried_with_backoff_then_fails(embedded_app, alice, monkeypatch):
    batch = alice.send({"a.ome.tif": ome_tiff(seed=11)})
    job_id = batch["jobs"][0]["id"]

    def unreachable(*_a, **_k):
        raise ServerUnreachable()

    monkeypatch.setattr(embedded_app.extensions["services"].omero, "session", unreachable)
    embedded_app.config["JOB_MAX_RETRIES"] = 2
    delays = [run(embedded_app, job_id) for _ in range(2)]
    assert [d.seconds for d in delays] == [5, 10]
    assert "trying again" in job(embedded_app, job_id).message
    assert run(embedded_app, job_id) == "failed"
    assert "cannot be reached" in job(embedded_app, job_id).message


def test_a_file_that_keeps_killing_workers_fails_instead_of_looping(embedded_app, alice):
    batch = alice.send({"a.ome.tif": ome_tiff(seed=12)})
    job_id = batch["jobs"][0]["id"]
    for _ in range(embedded_app.config["JOB_MAX_ATTEMPTS"]):
        _claimed(embedded_app, job_id)
        _expire_lease(embedded_app, job_id)
    assert run(embedded_app, job_id) == "failed"
    assert "stopped the worker" in job(embedded_app, job_id).message


def test_an_empty_file_fails_with_its_own_message_before_it_reaches_a_worker(embedded_app, alice):
    batch = alice.send({"empty.emd": b""})
    assert batch["jobs"][0]["state"] == "failed"
    assert run(embedded_app, batch["jobs"][0]["id"]) == "not claimable"
    assert job(embedded_app, batch["jobs"][0]["id"]).message.startswith("empty.emd is empty (0 bytes)")


def test_the_folder_is_kept_on_its_images_and_not_on_files_chosen_by_hand_beside_it(embedded_app, alice):
    batch = alice.send({"run/a.ome.tif": ome_tiff(seed=11), "b.ome.tif": ome_tiff(seed=12)}, folder="run")
    for sent in batch["jobs"]:
        assert run(embedded_app, sent["id"]) == "imported"
    kv = {image["name"]: image["annotations"]["key_values"].get("openmicroscopy.org/omero/client/mapAnnotation", [])
          for image in images(embedded_app, "alice")}
    assert kv == {"a.ome.tif": [["Folder", "run"]], "b.ome.tif": []}


def test_an_imported_image_has_a_thumbnail_of_its_own_pixels(embedded_app, alice):
    import io

    import imagecodecs
    import numpy as np
    import tifffile

    pixels = np.zeros((300, 600), np.uint16)
    pixels[:, 300:] = 4000  # dark left half, bright right half, twice as wide as high
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, ome=True, metadata={"axes": "YX"})
    batch = alice.send({"halves.ome.tif": buffer.getvalue()})
    job_id = batch["jobs"][0]["id"]
    assert run(embedded_app, job_id) == "imported"
    (image,) = alice.get(f"/api/batches/{batch['id']}").get_json()["jobs"][0]["images"]
    answer = alice.get(f"/api/jobs/{job_id}/images/{image['id']}/thumbnail")
    assert answer.status_code == 200 and answer.mimetype == "image/png"
    picture = imagecodecs.png_decode(answer.data)
    assert picture.shape == (48, 96) and picture.dtype == np.uint8  # longest side 96, the image's shape kept
    assert picture[:, :47].max() == 0 and picture[:, 49:].min() == 255  # the halves, stretched to black and white
    assert alice.get(f"/api/jobs/{job_id}/images/{image['id'] + 1}/thumbnail").status_code == 404  # not this job's



def test_the_same_new_content_in_two_batches_run_together_is_imported_once(app, monkeypatch):
    """Job B runs while job A is sending the same content to OMERO (B is run from inside A's import,
    on another worker: the interleaving that imported it twice). B waits in the queue instead, not
    counting an attempt; once A has ended, B finds A's image: one imported, one duplicate. Both
    databases: the claim is a row whose key is the content."""
    embedded_app, alice = app, Portal(app.test_client(), "alice")
    data = ome_tiff((1024, 1024), seed=61)
    first = alice.send({"a.ome.tif": data})["jobs"][0]["id"]
    second = alice.send({"copy of a.ome.tif": data})["jobs"][0]["id"]
    outcomes, real_progress = {}, pipeline.Run.progress

    def second_runs_meanwhile(run_, fraction, message):
        if run_.job_id == first and message.startswith("Importing") and second not in outcomes:
            outcomes[second] = run(embedded_app, second, worker="w2")
        real_progress(run_, fraction, message)

    monkeypatch.setattr(pipeline.Run, "progress", second_runs_meanwhile)
    assert run(embedded_app, first) == "imported"
    assert isinstance(outcomes[second], pipeline.RetryLater)
    waiting = job(embedded_app, second)
    assert waiting.state == "queued" and f"Waiting for job {first}, which imports the same content" in waiting.message
    assert waiting.attempts == 0 and waiting.lease_owner is None
    assert run(embedded_app, second, worker="w2") == "duplicate"
    (image,) = images(embedded_app, "alice")
    assert image["name"] == "a.ome.tif" and job(embedded_app, second).image_ids == [image["id"]]


def test_a_content_claim_left_by_a_dead_worker_is_taken_over(embedded_app, alice):
    """A worker that died holding a claim does not block the content for ever: once its job's lease
    ran out (here: the job was run again by the recovery sweep), the claim is taken over."""
    from app.core.db import utcnow
    from app.core.models import ContentClaim

    job_id = alice.send({"a.ome.tif": ome_tiff(seed=62)})["jobs"][0]["id"]
    with embedded_app.extensions["services"].db.session() as db:
        row = db.get(Job, job_id)
        db.add(ContentClaim(owner_id=row.owner_id, group_id=row.batch.group_id, content_sha1=row.content_sha1,
                            job_id=job_id, worker="dead:1", claimed_at=utcnow()))
        db.commit()
    assert run(embedded_app, job_id) == "imported"
    with embedded_app.extensions["services"].db.session() as db:
        assert db.query(ContentClaim).count() == 0  # released at the end of the run


def test_a_direct_electron_info_file_listed_once_is_staged_and_kept_with_each_image(embedded_app, alice, tmp_path):
    """The page lists the info file once; the server gives each MRC of the acquisition a job holding its
    own staged copy, so each image lands under the camera and the info's date, and keeps the info file."""
    from datetime import UTC, datetime

    from tests.converters.test_mrc import de_acquisition

    de_acquisition(tmp_path / "s")
    files = {f"s/{p.name}": p.read_bytes() for p in sorted((tmp_path / "s").iterdir())}
    batch = alice.send(files)
    assert [[f["name"] for f in j["files"]] for j in batch["jobs"]] == [
        [f"s/{n}", "s/Custom_info.txt"] for n in ("Custom_0_HAADF_sum.mrc", "Custom_final.mrc", "Custom_movie.mrc")]
    from app.core.models import JobFile

    services = embedded_app.extensions["services"]
    with services.db.session() as db:
        copies = [services.staging.path(f.job_id, f.stored_name) for f in db.query(JobFile).order_by(JobFile.id)
                  if f.name == "s/Custom_info.txt"]
    assert len(set(copies)) == 3 and all(p.read_bytes() == files["s/Custom_info.txt"] for p in copies)
    day = datetime.fromtimestamp(1745955900, UTC).astimezone(services.config["TZ"]).date().isoformat()
    for j in batch["jobs"]:
        assert run(embedded_app, j["id"]) == "imported"
        done = job(embedded_app, j["id"])
        assert (done.project, done.dataset) == ("DESim", day)  # Camera Model and Timestamp of Custom_info.txt
        assert "Custom_info.txt" in [o["name"] for o in done.originals]


def test_an_edax_map_with_its_spc_and_a_lone_spc_are_two_jobs_that_import(embedded_app, alice, tmp_path):
    from tests.converters.test_eds import edax_map

    made = edax_map(tmp_path / "run")
    (tmp_path / "run" / "spot.spc").write_bytes((SAMPLES / "647_leo_edax_test.spc").read_bytes())
    files = {f"run/{p.name}": p.read_bytes() for p in sorted((tmp_path / "run").iterdir())}
    batch = alice.send(files)
    assert [[f["name"] for f in j["files"]] for j in batch["jobs"]] == [
        ["run/map.spd", "run/map.spc", "run/map_Img.ipr"], ["run/spot.spc"]]
    for j in batch["jobs"]:
        assert run(embedded_app, j["id"]) == "imported"
    mapped = job(embedded_app, batch["jobs"][0]["id"])
    assert sorted(a["kind"] for a in mapped.attachments) == ["spectrum-csv", "spectrum-plot"]
    assert [o["name"] for o in mapped.originals] == [p.name for p in (made["spd"], made["spc"], made["ipr"])]
