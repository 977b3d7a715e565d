"""A researcher's history: their batches, newest first, with counts per state, filtered and paged.

The page (/history) opens a batch through GET /api/batches/<id> and retries through the jobs API, so
this module only lists. Only the user's own batches are listed (those staff made for them included).
"""
from __future__ import annotations

from flask import Blueprint, current_app, g, render_template, request
from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.orm import selectinload

from app.api.batches import count_states, count_to_check
from app.auth.guards import login_required
from app.core.models import Batch, Job, JobFile, JobState
from app.errors import ApiError
from app.core.jobs import TO_CHECK, page_states, to_check

bp = Blueprint("history", __name__)

PER_PAGE = 20
FILTER_STATES = [JobState.UPLOADING, JobState.QUEUED, *JobState.RUNNING, *JobState.FINAL]


@bp.get("/history")
@login_required
def page():
    """Show the user's earlier imports."""
    return render_template("history.html", states=page_states(),
                           filter_states=FILTER_STATES)


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _batches(user_id: int, state: str | None, text: str):
    query = select(Batch).where(Batch.owner_id == user_id)
    if state:
        matches = to_check() if state == TO_CHECK else Job.state == state
        query = query.where(Batch.id.in_(select(Job.batch_id).where(Job.owner_id == user_id, matches)))
    if text:
        like = _like(text)
        in_jobs = (select(Job.batch_id).join(JobFile, JobFile.job_id == Job.id)
                   .where(Job.owner_id == user_id, or_(JobFile.name.ilike(like, escape="\\"),
                                                       Job.message.ilike(like, escape="\\"),
                                                       Job.project.ilike(like, escape="\\"),
                                                       Job.dataset.ilike(like, escape="\\"))))
        query = query.where(or_(Batch.group_name.ilike(like, escape="\\"), Batch.folder.ilike(like, escape="\\"),
                                cast(Batch.key_values, String).ilike(like, escape="\\"), Batch.id.in_(in_jobs)))
    return query


@bp.get("/api/history")
@login_required
def api_history():
    """List the user's batches, newest first: ?state= (one of a job's states), ?q= (text in a file name,
    message, key-value, group, folder, project or dataset), ?page= (from 1)."""
    state, text = request.args.get("state") or None, request.args.get("q", "").strip()
    number = request.args.get("page", default=1, type=int)
    if state is not None and state not in (*FILTER_STATES, TO_CHECK):
        raise ApiError(f"state must be one of {', '.join((*FILTER_STATES, TO_CHECK))}")
    if number < 1 or len(text) > 200:
        raise ApiError("page counts from 1, and q holds at most 200 characters")
    query = _batches(g.user.id, state, text)
    with current_app.extensions["services"].db.session() as db:
        total = db.scalar(select(func.count()).select_from(query.subquery()))
        batches = db.scalars(query.options(selectinload(Batch.jobs)).order_by(Batch.id.desc())
                             .offset((number - 1) * PER_PAGE).limit(PER_PAGE)).all()
        return {"batches": [_summary(batch) for batch in batches], "page": number,
                "pages": max(1, -(-total // PER_PAGE)), "total": total}


def _summary(batch: Batch) -> dict:
    return {"id": batch.id, "created_at": batch.created_at.isoformat() + "Z", "group_name": batch.group_name,
            "key_values": batch.key_values, "folder": batch.folder, "jobs": len(batch.jobs), "states": count_states(batch),
            "to_check": count_to_check(batch), "size": sum(job.total_size for job in batch.jobs)}
