"""A converting job reports how far its conversion is, so its row moves (issue 15)."""
import shutil

import mrcfile
import numpy as np
from sqlalchemy import select

from app.core.models import JobEvent
from tests.helpers import SAMPLES, Portal
from workers import pipeline


def test_a_converting_job_reports_its_progress(embedded_app, tmp_path):
    with mrcfile.new(tmp_path / "Atlas_1.mrc") as m:  # 2 sections of 2100x3000: several tiles and levels
        m.set_data((np.arange(2 * 2100 * 3000, dtype=np.uint32).reshape(2, 2100, 3000) % 4093).astype(np.uint16))
    shutil.copy(SAMPLES / "Atlas_1.xml", tmp_path / "Atlas_1.xml")
    alice = Portal(embedded_app.test_client(), "alice")
    batch = alice.send({name: (tmp_path / name).read_bytes() for name in ("Atlas_1.mrc", "Atlas_1.xml")})
    job_id = batch["jobs"][0]["id"]
    with embedded_app.app_context():
        assert pipeline.run_job(embedded_app.extensions["services"], job_id, "w1") == "imported"
    with embedded_app.extensions["services"].db.session() as db:
        events = [e.data for e in db.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))]
    converting = [e["progress"] for e in events if e["state"] == "converting"]
    assert converting[0] == 0.0 and any(0 < p < 1 for p in converting), converting
    assert converting == sorted(converting)
