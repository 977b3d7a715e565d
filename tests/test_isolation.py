"""User B can read or touch none of user A's batches, jobs, files or events, on any endpoint."""
import hashlib

from tests.helpers import Portal, ome_tiff
from tests.sse_clients import read_stream


def test_another_users_ids_answer_404_everywhere_and_change_nothing(app):
    alice, bob = Portal(app.test_client(), "alice"), Portal(app.test_client(), "bob")
    data = ome_tiff(seed=1)
    batch = alice.new_batch({"a.ome.tif": data, "b.ome.tif": ome_tiff(seed=2)})
    (job, other), file_id = batch["jobs"], batch["jobs"][0]["files"][0]["id"]
    alice.put(f"/api/files/{file_id}?offset=0", data=data[:100])

    attempts = [
        bob.get(f"/api/batches/{batch['id']}"),
        bob.get(f"/api/files/{file_id}"),
        bob.put(f"/api/files/{file_id}?offset=100", data=data[100:]),
        bob.post(f"/api/files/{file_id}/complete", json={"sha1": hashlib.sha1(data).hexdigest()}),
        bob.post(f"/api/jobs/{job['id']}/cancel"),
        bob.post(f"/api/jobs/{other['id']}/retry"),
    ]
    assert [r.status_code for r in attempts] == [404] * len(attempts)
    assert all(r.get_json() == {"error": "Not found", "code": "not_found"} for r in attempts)
    assert bob.get("/api/batches").get_json() == {"batches": []}
    assert read_stream(bob.client, "/api/events?after=0") == []
    assert read_stream(bob.client, "/api/events", headers={"Last-Event-ID": "0"}) == []

    state = alice.batch(batch["id"])
    assert state["jobs"][0]["state"] == "uploading" and state["jobs"][0]["files"][0]["received"] == 100
    assert state["jobs"][1]["state"] == "uploading"


def test_the_embedded_store_page_shows_only_the_users_images(embedded_app):
    from workers import pipeline

    alice, bob = Portal(embedded_app.test_client(), "alice"), Portal(embedded_app.test_client(), "bob")
    batch = alice.send({"private-name.ome.tif": ome_tiff(seed=3)})
    with embedded_app.app_context():
        pipeline.run_job(embedded_app.extensions["services"], batch["jobs"][0]["id"], "w1")
    assert "private-name" in alice.get("/store").get_data(as_text=True)
    assert "private-name" not in bob.get("/store").get_data(as_text=True)
    image_id = embedded_app.extensions["services"].omero.images_of("alice")[0]["id"]
    assert bob.get(f"/store/image/{image_id}").status_code == 404
