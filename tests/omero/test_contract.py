"""The Gateway/Session contract, run against every backend: the omero-py adapter on the strict fake,
the embedded store, and a live OMERO when one is configured (OMERO_TEST_* variables)."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile

from app.core.omero.base import Annotations, Gateway, ImageRef, PartOfFileset, PermissionDenied, SessionExpired
from tests.helpers import SAMPLES

from .requirements import require_omero_py

LIVE_VARS = ("OMERO_TEST_HOST", "OMERO_TEST_USER", "OMERO_TEST_PASSWORD", "OMERO_TEST_ADMIN_USER",
             "OMERO_TEST_ADMIN_PASSWORD")


@dataclass
class Backend:
    gateway: Gateway
    user_key: Callable[[], str]  # a key for the user under test
    other_key: Callable[[], str]  # a key for another user


def _fake_backend(request) -> Backend:
    gateway = request.getfixturevalue("omero_gateway")
    return Backend(gateway, lambda: gateway.create_session("alice", 3600),
                   lambda: gateway.create_session("bob", 3600))


def _embedded_backend(tmp_path: Path) -> Backend:
    if importlib.util.find_spec("app.core.omero.embedded") is None:
        pytest.skip("app.core.omero.embedded (the main branch's embedded store) is not in this tree yet")
    from app.core.omero.embedded import EmbeddedGateway

    gateway = EmbeddedGateway(tmp_path / "store", web_url="/store", groups=("Lab",))
    return Backend(gateway, lambda: gateway.create_session("alice", 3600),
                   lambda: gateway.create_session("bob", 3600))


def _live_backend() -> Backend:
    missing = [v for v in LIVE_VARS if not os.environ.get(v)]
    if missing:
        pytest.skip(f"no live OMERO: set {', '.join(missing)} (and OMERO_TEST_PORT) to run against one")
    require_omero_py()
    import omero.clients

    from app.core.omero.omeropy import OmeroPyGateway

    env = os.environ
    host, port = env["OMERO_TEST_HOST"], int(env.get("OMERO_TEST_PORT", "4064"))
    gateway = OmeroPyGateway(host, port, f"https://{host}", admin_user=env["OMERO_TEST_ADMIN_USER"],
                             admin_password=env["OMERO_TEST_ADMIN_PASSWORD"])

    def login() -> str:
        # A session the user opened with a password, like OMERO.web's token page hands out.
        client = omero.client(host=host, port=port)
        try:
            client.createSession(env["OMERO_TEST_USER"], env["OMERO_TEST_PASSWORD"]).detachOnDestroy()
            return client.getSessionId()
        finally:
            client.closeSession()

    return Backend(gateway, login, lambda: gateway.create_session(env["OMERO_TEST_ADMIN_USER"], 600))


@pytest.fixture(params=["omeropy-fake", "embedded", "omeropy-live"])
def backend(request, tmp_path) -> Backend:
    if request.param == "omeropy-fake":
        return _fake_backend(request)
    if request.param == "embedded":
        return _embedded_backend(tmp_path)
    return _live_backend()


@pytest.fixture
def key(backend) -> str:
    return backend.user_key()


@pytest.fixture
def names() -> tuple[str, str]:
    """Project and dataset names no earlier run used (a live server keeps what tests make)."""
    run = uuid.uuid4().hex[:8]
    return f"portal-contract-{run}", "2026-11-21"


def tiny_tiff(path: Path, seed: int | None = None) -> tuple[Path, str]:
    """A small TIFF any OMERO imports, with unique pixels; returns it with its SHA-1."""
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16), dtype=np.uint8)
    tifffile.imwrite(path, pixels)
    return path, hashlib.sha1(path.read_bytes()).hexdigest()


def do_import(session, group_id, dataset_id, path: Path, *, job_uid: str, content_sha1: str,
              progress=lambda sent, total: None, content_size: int | None = None) -> list[ImageRef]:
    provenance = {"content_sha1": content_sha1, "job_uid": job_uid}
    if content_size is not None:
        provenance["content_size"] = str(content_size)
    annotations = Annotations(
        key_values=[("Microscope", "Krios")], tags=["contract-test"], metadata={"Voltage": "300 kV"},
        provenance=provenance,
    )
    return session.import_image(group_id, dataset_id, [path], name=path.name, description="contract test",
                                annotations=annotations, progress=progress)


def test_whoami_names_the_user_with_the_default_group_first(backend, key):
    with backend.gateway.session(key) as session:
        me = session.whoami()
    assert me.username and me.full_name
    assert me.groups and me.groups[0].id == me.default_group_id
    assert len({g.id for g in me.groups}) == len(me.groups)


def test_get_or_create_dataset_is_idempotent(backend, key, names):
    project, dataset = names
    with backend.gateway.session(key) as session:
        gid = session.whoami().default_group_id
        first = session.get_or_create_dataset(gid, project, dataset)
        again = session.get_or_create_dataset(gid, project, dataset)
        other_day = session.get_or_create_dataset(gid, project, "2026-11-22")
    assert again == first
    assert (first.project, first.dataset) == (project, dataset)
    assert other_day.project_id == first.project_id and other_day.dataset_id != first.dataset_id


def test_find_images_before_and_after_import(backend, key, names, tmp_path):
    path, sha1 = tiny_tiff(tmp_path / "grid.tif")
    seen = []
    with backend.gateway.session(key) as session:
        gid = session.whoami().default_group_id
        placement = session.get_or_create_dataset(gid, *names)
        assert session.find_images(gid, sha1) == []
        made = do_import(session, gid, placement.dataset_id, path, job_uid="job-1", content_sha1=sha1,
                         progress=lambda sent, total: seen.append((sent, total)))
        found = session.find_images(gid, sha1)
        everywhere = session.find_images(None, sha1)
    assert len(made) == 1 and made[0].sha1 == sha1 and made[0].name == "grid.tif"
    assert str(made[0].id) in made[0].url
    assert [(r.id, r.sha1, r.job_uid) for r in found] == [(made[0].id, sha1, "job-1")]
    assert [r.id for r in everywhere] == [made[0].id]
    assert seen[-1] == (path.stat().st_size, path.stat().st_size)


def test_converted_image_is_found_by_its_source_checksum(backend, key, names, tmp_path):
    """A converted file differs from its source: the provenance annotation carries the source's SHA-1."""
    path, sha1 = tiny_tiff(tmp_path / "converted.ome.tif")
    source_sha1 = hashlib.sha1(uuid.uuid4().bytes).hexdigest()
    with backend.gateway.session(key) as session:
        gid = session.whoami().default_group_id
        placement = session.get_or_create_dataset(gid, *names)
        (made,) = do_import(session, gid, placement.dataset_id, path, job_uid="job-2", content_sha1=source_sha1)
        (found,) = session.find_images(gid, source_sha1)
    assert (found.id, found.sha1, found.job_uid) == (made.id, sha1, "job-2")


def test_content_sizes_name_the_sizes_of_held_files_and_converted_sources(backend, key, names, tmp_path):
    """The first sieve of the duplicate check: a fileset file's size, or a converted source's
    (provenance content_size), in any of the user's groups; never another user's."""
    path, sha1 = tiny_tiff(tmp_path / "sized.tif")
    size = path.stat().st_size
    source_size = 10**12 + int(uuid.uuid4().int % 10**9)  # no other file of a live server has it
    with backend.gateway.session(key) as session:
        gid = session.whoami().default_group_id
        assert session.content_sizes([source_size]) == set()
        placement = session.get_or_create_dataset(gid, *names)
        do_import(session, gid, placement.dataset_id, path, job_uid="job-4", content_sha1=sha1, content_size=source_size)
        assert session.content_sizes([size, source_size, source_size + 1]) == {size, source_size}
        assert session.content_sizes([]) == set()
    with backend.gateway.session(backend.other_key()) as other:
        assert other.content_sizes([source_size]) == set()


def test_another_users_images_are_not_found(backend, key, names, tmp_path):
    path, sha1 = tiny_tiff(tmp_path / "mine.tif")
    with backend.gateway.session(key) as session:
        gid = session.whoami().default_group_id
        placement = session.get_or_create_dataset(gid, *names)
        do_import(session, gid, placement.dataset_id, path, job_uid="job-3", content_sha1=sha1)
    with backend.gateway.session(backend.other_key()) as other:
        assert other.find_images(None, sha1) == []


def test_a_bad_key_is_an_expired_session(backend):
    with pytest.raises(SessionExpired, match="sign in again"):
        with backend.gateway.session("no-such-session-" + uuid.uuid4().hex):
            pass


def test_keep_alive(backend, key):
    assert backend.gateway.keep_alive(key) is True
    assert backend.gateway.keep_alive("no-such-session-" + uuid.uuid4().hex) is False


def test_leaving_a_session_does_not_end_it(backend, key):
    with backend.gateway.session(key) as session:
        me = session.whoami()
    with backend.gateway.session(key) as session:
        assert session.whoami().user_id == me.user_id
    assert backend.gateway.keep_alive(key) is True


def test_close_session_ends_a_portal_made_session_and_only_that_one(backend):
    mine, other = backend.other_key(), backend.user_key()  # other_key: made by create_session
    assert backend.gateway.can_create_sessions
    backend.gateway.close_session(mine)
    with pytest.raises(SessionExpired):
        with backend.gateway.session(mine):
            pass
    assert backend.gateway.keep_alive(other)
    backend.gateway.close_session(mine)  # closing a closed session is not an error


def test_key_values_are_the_users_own_values_of_that_key_in_that_group(backend, key, names, tmp_path):
    run = uuid.uuid4().hex[:6]  # a live server keeps earlier runs' values
    liver, kidney = f"Liver {run}", f"Kidney {run}"
    with backend.gateway.session(key) as session:
        me = session.whoami()
        gid = me.default_group_id
        placement = session.get_or_create_dataset(gid, *names)
        for i, pairs in enumerate([[("Sample", liver), ("Grid", "7")], [("Sample", kidney)], [("Sample", liver)]]):
            path, sha1 = tiny_tiff(tmp_path / f"kv{i}.tif")
            session.import_image(gid, placement.dataset_id, [path], name=path.name, description="kv",
                                 annotations=Annotations(key_values=pairs, provenance={"content_sha1": sha1}),
                                 progress=lambda sent, total: None)
        samples = session.key_values(gid, "Sample")
        grids = session.key_values(gid, "Grid")
        elsewhere = max(g.id for g in me.groups) + 1_000_000
        with pytest.raises(PermissionDenied):
            session.key_values(elsewhere, "Sample")
    assert [v for v in samples if v.endswith(run)] == sorted([kidney, liver])
    assert "7" in grids and liver not in grids
    with backend.gateway.session(backend.other_key()) as other:
        assert not [v for v in other.key_values(other.whoami().default_group_id, "Sample") if v.endswith(run)]


def test_delete_images_and_remove_placement_undo_an_import(backend, key, names, tmp_path):
    path, sha1 = tiny_tiff(tmp_path / "undo.tif")
    with backend.gateway.session(key) as session:
        assert session.server_version()
        gid = session.whoami().default_group_id
        placement = session.get_or_create_dataset(gid, *names)
        (made,) = do_import(session, gid, placement.dataset_id, path, job_uid="job-undo", content_sha1=sha1)
        assert session.image_tags(gid, made.id) == ["contract-test"]
        session.delete_images(gid, [made.id])
        assert session.find_images(gid, sha1) == [] and session.find_images(None, sha1) == []
        session.remove_placement(gid, placement)
        again = session.get_or_create_dataset(gid, *names)  # made anew
        session.remove_placement(gid, again)
    assert (again.project, again.dataset) == names


def test_an_import_is_complete_only_once_the_portal_marks_it(backend, key, names, tmp_path):
    """OMERO saves images before their pixels (and Pixels.sha1 says "Pending..."): only the portal's
    own mark, written after the import's response and checks, makes an import complete."""
    path, sha1 = tiny_tiff(tmp_path / "marked.tif")
    with backend.gateway.session(key) as session:
        gid = session.whoami().default_group_id
        placement = session.get_or_create_dataset(gid, *names)
        (made,) = do_import(session, gid, placement.dataset_id, path, job_uid="job-mark", content_sha1=sha1)
        before = [(r.id, r.complete) for r in session.find_images(gid, sha1)]
        session.mark_complete(gid, [made.id])
        after = [(r.id, r.job_uid, r.complete) for r in session.find_images(None, sha1)]
        session.delete_images(gid, [made.id])
        session.remove_placement(gid, placement)
    assert not made.complete and before == [(made.id, False)]
    assert after == [(made.id, "job-mark", True)]


def multi_series_tiff(path: Path, series: tuple[str, ...]) -> tuple[Path, str]:
    """An OME-TIFF of several series (one Image element each), as a slide scanner writes."""
    rng = np.random.default_rng()
    with tifffile.TiffWriter(path, ome=True) as tif:
        for name in series:
            tif.write(rng.integers(0, 255, (16, 16), dtype=np.uint8), metadata={"axes": "YX", "Name": name})
    return path, hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("sample, series", [
    (None, ("left", "right", "overview")),  # a multi-series OME-TIFF: each Image element a series
    ("S3_1Pos_2Mosaic_T1_Z1_CH1.czi", ("TR1", "P1", "TR2")),  # a Celldiscoverer CZI: each scene a series
])
def test_one_import_makes_one_image_per_series_in_one_fileset_deleted_whole(backend, key, names, tmp_path,
                                                                             sample, series):
    if sample:
        path, sha1 = SAMPLES / sample, hashlib.sha1((SAMPLES / sample).read_bytes()).hexdigest()
    else:
        path, sha1 = multi_series_tiff(tmp_path / "slide.ome.tif", series)
    with backend.gateway.session(key) as session:
        gid = session.whoami().default_group_id
        placement = session.get_or_create_dataset(gid, *names)
        made = do_import(session, gid, placement.dataset_id, path, job_uid="job-series", content_sha1=sha1)
        found = session.find_images(gid, sha1)
        with pytest.raises(PartOfFileset, match="deleted together|delete them together"):
            session.delete_images(gid, [made[0].id, made[1].id])  # part of the fileset: refused, nothing goes
        after_refusal = [r.id for r in session.find_images(gid, sha1)]
        session.delete_images(gid, [r.id for r in made])
        left = session.find_images(None, sha1)
        session.remove_placement(gid, placement)
    assert [r.name for r in made] == [f"{path.name} [{name}]" for name in series]
    assert {r.sha1 for r in made} == {sha1} and len({r.fileset_id for r in made}) == 1 and made[0].fileset_id
    assert [(r.id, r.job_uid) for r in found] == [(r.id, "job-series") for r in made]
    assert after_refusal == [r.id for r in made] and left == []


TIA_PAIR = ("128x128_TEM_acquire-sum1.emi", "128x128_TEM_acquire-sum1_1.ser")


def test_originals_are_kept_beside_images_with_omeros_sha1_and_read_back_byte_for_byte(backend, key, names, tmp_path):
    from app.core.omero.base import ORIGINAL, ORIGINAL_NAMESPACE, FileToAttach
    from tests.helpers import SAMPLES

    first, _ = tiny_tiff(tmp_path / "converted.ome.tif")
    second, _ = tiny_tiff(tmp_path / "converted-2.ome.tif")
    originals = [FileToAttach(SAMPLES / name, name, ORIGINAL) for name in TIA_PAIR]
    seen = []
    with backend.gateway.session(key) as session:
        gid = session.whoami().default_group_id
        placement = session.get_or_create_dataset(gid, *names)
        images = [do_import(session, gid, placement.dataset_id, path, job_uid=f"job-{path.name}",
                            content_sha1=uuid.uuid4().hex)[0] for path in (first, second)]
        stored = session.attach_files(gid, [i.id for i in images], originals, ORIGINAL_NAMESPACE,
                                      lambda sent, total: seen.append((sent, total)))
        listed = [session.stored_files(gid, image.id) for image in images]
        everywhere = session.stored_files(None, images[0].id)
        read_back = {f.name: b"".join(session.read_file(gid, f.id)) for f in stored}
    local = {name: (SAMPLES / name).read_bytes() for name in TIA_PAIR}
    assert [(f.name, f.size, f.sha1, f.kind) for f in stored] == [
        (name, len(local[name]), hashlib.sha1(local[name]).hexdigest(), ORIGINAL) for name in TIA_PAIR]
    assert read_back == local
    for files in listed:  # one stored copy, linked to both images, beside each image's own fileset file
        assert [f for f in files if f.kind == ORIGINAL] == stored
        assert [f.kind for f in files].count("fileset") == 1
    assert everywhere == listed[0]
    assert seen[-1] == (sum(map(len, local.values())),) * 2


def test_another_user_cannot_attach_files_to_my_image(backend, key, names, tmp_path):
    """(Reading is OMERO's group permissions' business; the portal only serves a job's own files.)"""
    from app.core.omero.base import ATTACHMENT_NAMESPACE, FileToAttach

    path, _ = tiny_tiff(tmp_path / "mine.ome.tif")
    csv = tmp_path / "EDS.csv"
    csv.write_text("energy,counts\n0,1\n")
    with backend.gateway.session(key) as session:
        gid = session.whoami().default_group_id
        placement = session.get_or_create_dataset(gid, *names)
        (image,) = do_import(session, gid, placement.dataset_id, path, job_uid="job-files", content_sha1=uuid.uuid4().hex)
        (stored,) = session.attach_files(gid, [image.id], [FileToAttach(csv, "EDS.csv", "spectrum-csv")],
                                         ATTACHMENT_NAMESPACE, lambda sent, total: None)
    assert stored.kind == "spectrum-csv"
    with backend.gateway.session(backend.other_key()) as other:
        me = other.whoami()
        if me.is_admin:
            pytest.skip("the other user of this server is an admin, who may annotate anything")
        other_gid = me.default_group_id
        with pytest.raises(PermissionDenied):
            other.attach_files(other_gid, [image.id], [FileToAttach(csv, "x.csv", "spectrum-csv")],
                               ATTACHMENT_NAMESPACE, lambda sent, total: None)
