"""Originals kept through the omero-py adapter on the strict fake (issue 12): streamed in MiB blocks,
OMERO's own SHA-1 read back, downloads byte for byte, confirm from OMERO, a full repository retried."""
import hashlib

from app.core.omero.base import ORIGINAL_NAMESPACE
from tests.helpers import SAMPLES
from workers import pipeline

TIA = ["128x128_TEM_acquire-sum1.emi", "128x128_TEM_acquire-sum1_1.ser"]


def send_tia(portal) -> dict:
    return portal.send({name: (SAMPLES / name).read_bytes() for name in TIA})["jobs"][0]


def run(app, job_id):
    with app.app_context():
        return pipeline.run_job(app.extensions["services"], job_id, "w1")


def test_a_tia_pairs_originals_are_attachments_with_omeros_sha1_and_download_byte_for_byte(portal_app, alice, fake_omero):
    job = send_tia(alice)
    assert run(portal_app, job["id"]) == "imported"
    got = alice.get(f"/api/jobs/{job['id']}").get_json()
    for original in got["originals"]:
        local = (SAMPLES / original["name"]).read_bytes()
        assert original["sha1"] == hashlib.sha1(local).hexdigest()
        assert alice.get(original["url"]).data == local
    (image,) = got["images"]
    annotations = fake_omero.rows("fileann")
    assert [a.fields["ns"] for a in annotations] == [ORIGINAL_NAMESPACE] * 2
    assert {link.fields["parent"] for link in fake_omero.rows("ialink") if link.fields["child"] in {a.id for a in annotations}} == {image["id"]}
    # OMERO computed each hash itself (hasher SHA1-160) when the store was saved
    files = {f.fields["name"]: f for f in fake_omero.rows("file") if f.fields["hasher"] and f.fields.get("digest")}
    assert {n: f.fields["hash"] for n, f in files.items()} == {o["name"]: o["sha1"] for o in got["originals"]}
    from app.core.omero.omeropy_files import BLOCK

    writes = fake_omero.calls("rfs.write")
    assert writes and all(length <= BLOCK for *_, length in writes)
    assert len(fake_omero.calls("rfs.save")) == 2
    assert alice.get(f"/api/jobs/{job['id']}/confirm").get_json()["in_omero"] is True
    # the .ser's attachment is removed in OMERO: confirm says so, read from OMERO
    ser = next(a for a in annotations if fake_omero.store.rows[a.fields["file"]].fields["name"] == TIA[1])
    for link in fake_omero.rows("ialink"):
        if link.fields["child"] == ser.id:
            fake_omero.store.delete(link.id)
    confirmed = alice.get(f"/api/jobs/{job['id']}/confirm").get_json()
    assert confirmed["in_omero"] is False and confirmed["missing"] == [TIA[1]]


def test_a_full_repository_retries_and_nothing_is_imported_without_its_originals(portal_app, alice, fake_omero):
    job = send_tia(alice)
    fake_omero.files.full = True
    assert isinstance(run(portal_app, job["id"]), pipeline.RetryLater)
    got = alice.get(f"/api/jobs/{job['id']}").get_json()
    assert got["state"] != "imported" and "repository may be full" in got["message"]
    fake_omero.files.full = False
    assert run(portal_app, job["id"]) == "imported"
    assert len(fake_omero.rows("image")) == 1  # the rerun found its image and only kept the originals
    assert len(alice.get(f"/api/jobs/{job['id']}").get_json()["originals"]) == 2


def test_a_file_corrupted_on_its_way_to_omero_is_not_counted_as_kept(portal_app, alice, fake_omero):
    job = send_tia(alice)
    fake_omero.files.corrupt_writes = True
    assert isinstance(run(portal_app, job["id"]), pipeline.RetryLater)
    assert "does not match" in alice.get(f"/api/jobs/{job['id']}").get_json()["message"]
    fake_omero.files.corrupt_writes = False
    assert run(portal_app, job["id"]) == "imported"
    got = alice.get(f"/api/jobs/{job['id']}").get_json()
    assert [o["sha1"] for o in got["originals"]] == [hashlib.sha1((SAMPLES / n).read_bytes()).hexdigest() for n in TIA]
    assert alice.get(f"/api/jobs/{job['id']}/confirm").get_json()["in_omero"] is True


def test_another_users_job_files_answer_404(portal_app, alice, omero_gateway):
    from tests.helpers import sign_in_with_key

    job = send_tia(alice)
    run(portal_app, job["id"])
    url = alice.get(f"/api/jobs/{job['id']}").get_json()["originals"][0]["url"]
    bob, _ = sign_in_with_key(portal_app, omero_gateway.create_session("bob", 600))
    assert bob.get(url).status_code == 404 and bob.get(f"/api/jobs/{job['id']}").status_code == 404


def test_every_image_and_spectrum_of_a_conversion_lands_through_the_adapter(portal_app, alice, fake_omero, monkeypatch):
    import converters
    from tests.helpers import with_more

    real = converters.convert
    monkeypatch.setattr(converters, "convert", lambda files, out, options: with_more(real(files, out, options), out))
    job = send_tia(alice)
    assert run(portal_app, job["id"]) == "imported"
    got = alice.get(f"/api/jobs/{job['id']}").get_json()
    assert [i["name"] for i in got["images"]] == [TIA[0], f"{TIA[0]} [HAADF]"]
    assert got["summary"] == "2 images, 1 spectrum attached, originals kept"
    assert alice.get(got["attachments"][0]["url"]).data.startswith(b"energy (keV),counts")
    image_ids = {i["id"] for i in got["images"]}
    for annotation in fake_omero.rows("fileann"):  # every file linked to both images, once stored
        linked = {link.fields["parent"] for link in fake_omero.rows("ialink") if link.fields["child"] == annotation.id}
        assert linked == image_ids
    assert len(fake_omero.rows("fileann")) == 4  # two originals, the CSV and the plot
