"""A job's own actions (cancel, retry) and the user's live job events."""
from __future__ import annotations

from flask import g

from app.api import bp
from app.api.common import _db, _own, _staging
from app.auth.guards import login_required
from app.core import jobs as job_states
from app.core.models import Job
from app.events import sse_response


@bp.post("/jobs/<int:job_id>/cancel")
@login_required
def cancel_job(job_id: int):
    """Cancel a job that is being sent, waits in the queue or runs (its conversion is stopped)."""
    with _db() as db:
        job = _own(db, Job, job_id)
        job_states.cancel(db, job, _staging())
        return job.public()


@bp.post("/jobs/<int:job_id>/retry")
@login_required
def retry_job(job_id: int):
    """Queue a failed job again; its bytes are still on the server."""
    with _db() as db:
        job = _own(db, Job, job_id)
        job_states.retry(db, job, _staging())
        return job.public()


@bp.get("/events")
@login_required
def events():
    """Stream the user's own job events (SSE), replaying those after Last-Event-ID or ?after=."""
    return sse_response(g.user.id)
