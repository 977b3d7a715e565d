"""Facility staff's view of every user's jobs: the dashboard with the workers and the queue, one job with
its diagnostics, the JSON lists and live events, acting on a job, and the OMERO self-check."""
from __future__ import annotations

import shutil
from datetime import timedelta

from flask import abort, current_app, flash, g, redirect, render_template, request, url_for
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from app.auth.guards import staff_required
from app.core import crypto, retention
from app.core import jobs as job_states
from app.core.jobs import page_states
from app.core.db import utcnow
from app.core.models import Batch, Job, JobEvent, JobState, User, WorkerBeat
from app.events import sse_response
from app.staff import bp
from converters.meta import human_size

OFFLINE_AFTER_SECONDS = 30  # a worker silent this long is shown offline (workers beat every 10 s at most)
LIMIT_HIT = "limit"  # the lists' filter for jobs whose conversion a time or memory limit stopped


def _db():
    return current_app.extensions["services"].db.session()


def _job_or_404(db, job_id: int) -> Job:
    return db.get(Job, job_id) or abort(404)


def staff_job_json(job: Job, username: str) -> dict:
    return {**job.public(), "user": username, "group": job.batch.group_name, "detail": job.detail,
            "attempts": job.attempts, "limit_hit": job.limit_hit, "worker": (job.lease_owner or "").rsplit(":", 1)[0] or None,
            "created_at": job.created_at.isoformat() + "Z",
            "finished_at": job.finished_at.isoformat() + "Z" if job.finished_at else None,
            "files": [f.name for f in job.files],
            "staged": job.state in retention.FREEABLE and current_app.extensions["services"].staging.job_dir(job.id).exists()}


def filtered_jobs(db, args, limit: int = 500) -> list[dict]:
    query = (select(Job, User.username).join(User, User.id == Job.owner_id).join(Batch, Batch.id == Job.batch_id)
             .options(selectinload(Job.files), selectinload(Job.batch)).order_by(Job.id.desc()).limit(limit))
    if args.get("state") == job_states.TO_CHECK:
        query = query.where(job_states.to_check())
    elif args.get("state") == LIMIT_HIT:
        query = query.where(Job.limit_hit.is_not(None))
    elif args.get("state"):
        query = query.where(Job.state == args["state"])
    if args.get("user"):
        query = query.where(User.username == args["user"])
    if args.get("group"):
        query = query.where(Batch.group_name == args["group"])
    if args.get("microscope"):
        query = query.where(Job.microscope == args["microscope"])
    return [staff_job_json(job, username) for job, username in db.execute(query)]


def can_move_to_front() -> bool:
    """Only Redis serves messages by priority; the embedded broker takes them in order."""
    return current_app.config["BROKER_URL"].startswith(("redis://", "rediss://"))


def queue_status(db) -> dict:
    """Workers online, what each runs, queue depth and the age of the oldest queued job."""
    now = utcnow()
    period = job_states.beat_period(current_app.config)
    running = db.execute(select(Job.id, Job.lease_owner).where(Job.state.in_(JobState.RUNNING))).all()
    workers = []
    for beat in db.scalars(select(WorkerBeat).order_by(WorkerBeat.name)):
        online = now - beat.last_seen < timedelta(seconds=max(OFFLINE_AFTER_SECONDS, 2 * period))
        jobs = [job_id for job_id, owner in running if owner and owner.rsplit(":", 1)[0] == beat.name]
        workers.append({"name": beat.name, "online": online, "concurrency": beat.concurrency, "jobs": jobs,
                        "last_seen_seconds": round((now - beat.last_seen).total_seconds(), 1)})
    depth, oldest = db.execute(select(func.count(Job.id), func.min(Job.enqueued_at))
                               .where(Job.state == JobState.QUEUED)).one()
    online = sum(w["online"] for w in workers)
    return {"workers": workers, "online": online, "queue_depth": depth, "can_move_to_front": can_move_to_front(),
            "oldest_queued_seconds": round((now - oldest).total_seconds(), 1) if oldest else None,
            "alarm": "No worker is online: queued jobs are waiting" if not online else None}


@bp.get("/staff")
@staff_required
def dashboard():
    """Show every user's jobs, the workers and the queue."""
    with _db() as db:
        users = db.scalars(select(User.username).order_by(User.username)).all()
        microscopes = db.scalars(select(Job.microscope).where(Job.microscope.is_not(None)).distinct()).all()
        groups = db.scalars(select(Batch.group_name).distinct()).all()
        status = queue_status(db)
    staging = current_app.extensions["services"].staging
    disk = shutil.disk_usage(staging.root)
    return render_template("staff.html", staged=human_size(retention.staged_bytes(staging.root)),
                           disk_free=human_size(disk.free), disk_total=human_size(disk.total), users=users, microscopes=sorted(microscopes), groups=sorted(groups),
                           states=[JobState.UPLOADING, JobState.QUEUED, *JobState.RUNNING, *JobState.FINAL], page_states=page_states(),
                           status=status)


@bp.post("/staff/digest")
@staff_required
def digest():
    """Turn this staff member's daily e-mail of failed jobs on or off."""
    wanted = request.form.get("digest") == "on"
    with _db() as db:
        db.get(User, g.user.id).failure_digest = wanted
        db.commit()
    flash(f"You {'now get' if wanted else 'no longer get'} a daily e-mail of the jobs that failed", "info")
    return redirect(url_for("staff.dashboard"), 303)


@bp.get("/staff/jobs/<int:job_id>")
@staff_required
def job_page(job_id: int):
    """Show one job: its files, its history and its diagnostics."""
    with _db() as db:
        job = _job_or_404(db, job_id)
        owner = db.get(User, job.owner_id)
        history = db.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
        return render_template("staff_job.html", job=staff_job_json(job, owner.username), history=history,
                               states=page_states())


@bp.get("/api/staff/jobs")
@staff_required
def api_jobs():
    """List jobs of all users, newest first, filtered by state, user, group and microscope."""
    with _db() as db:
        cursor = db.scalar(select(func.max(JobEvent.id))) or 0
        return {"jobs": filtered_jobs(db, request.args), "cursor": cursor}


@bp.get("/api/staff/status")
@staff_required
def api_status():
    """Report workers, what each runs, queue depth and the oldest queued job's age."""
    with _db() as db:
        return queue_status(db)


@bp.get("/api/staff/events")
@staff_required
def api_events():
    """Stream every user's job events (SSE), replaying those after Last-Event-ID or ?after=."""
    return sse_response(None)


@bp.post("/api/staff/jobs/<int:job_id>/<any(retry, cancel, front, free):action>")
@staff_required
def api_act(job_id: int, action: str):
    """Retry a failed job, cancel any unfinished one, move a queued job to the front, or free the
    staged bytes of a failed, cancelled or unfinished job now."""
    staging = current_app.extensions["services"].staging
    with _db() as db:
        job = _job_or_404(db, job_id)
        if action == "free":
            freed = retention.free_job(db, job, staging, "freed by the facility staff")
            return {**job.public(), "freed_bytes": freed}
        if action == "retry":
            job_states.retry(db, job, staging)
        elif action == "cancel":
            job_states.cancel(db, job, staging, by_staff=True)
        elif job.state != JobState.QUEUED:
            raise job_states.NotAllowed(f"Only a queued job can be moved to the front (this one is {job.state})")
        elif not can_move_to_front():
            raise job_states.NotAllowed("Moving to the front needs the Redis broker: the embedded one serves jobs in order")
        else:
            job_states.enqueue(db, [job], front=True)
        return job.public()


@bp.route("/staff/omero-check", methods=["GET", "POST"])
@staff_required
def omero_check():
    """Offer the OMERO self-check (`upload-portal check-omero`); run it on POST and show each result."""
    from app.core.omero.check import SelfCheck

    results = None
    if request.method == "POST":
        gateway = current_app.extensions["services"].omero
        # The admin account when one is configured (or the embedded store); else the staff's own key.
        key = None if gateway.can_create_sessions else crypto.decrypt(g.user.omero_key or "", current_app.config["ENCRYPTION_KEY"])
        admin = current_app.config["OMERO_ADMIN_USER"] or "upload-portal-check"
        results = list(SelfCheck(gateway, key=key, admin_user=admin).results())
    return render_template("staff_omero_check.html", results=results)
