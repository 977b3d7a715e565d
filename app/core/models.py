"""The portal's rows: users, their batches, one job per file group, the job's files and events.

Jobs and events are the source of truth for the page, the staff view and recovery after a crash;
Celery only carries job ids.
"""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from app.core.db import utcnow


class Base(DeclarativeBase):
    pass


class JobState:
    UPLOADING = "uploading"  # rows exist, bytes still arriving (the browser shows "pending")
    QUEUED = "queued"
    CONVERTING = "converting"
    IMPORTING = "importing"
    IMPORTED = "imported"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    CANCELLED = "cancelled"

    RUNNING = (CONVERTING, IMPORTING)
    CLAIMABLE = (QUEUED, CONVERTING, IMPORTING)
    FINAL = (IMPORTED, DUPLICATE, FAILED, CANCELLED)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    full_name: Mapped[str] = mapped_column(String(255), default="")
    is_staff: Mapped[bool] = mapped_column(Boolean, default=False)
    omero_key: Mapped[str | None] = mapped_column(Text)  # encrypted (app.core.crypto), never sent to a browser
    # "portal": made by the portal through the admin connection, so the portal closes it at sign-out;
    # "user": pasted from OMERO.web, where the user (and OMERO.web) still use it, so it is never closed.
    omero_key_source: Mapped[str | None] = mapped_column(String(8))
    groups: Mapped[list] = mapped_column(JSON, default=list)  # [{"id", "name"}], default group first
    email: Mapped[str] = mapped_column(String(255), default="")  # from OMERO, for retention reminders
    reminded_at: Mapped[datetime | None] = mapped_column(DateTime)  # last retention reminder sent
    notify_imports: Mapped[bool] = mapped_column(Boolean, default=False)  # the page's e-mail box starts ticked
    failure_digest: Mapped[bool] = mapped_column(Boolean, default=False)  # staff: a daily e-mail of failed jobs
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_login: Mapped[datetime | None] = mapped_column(DateTime)


class WebSession(Base):
    """A browser's portal session; the cookie carries only a random id whose SHA-256 is the key here."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the cookie value
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    data: Mapped[dict] = mapped_column(JSON, default=dict)  # CSRF secret, flashes, sign-in state
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class ApiToken(Base):
    """A personal token for scripts: only its SHA-256 is kept; the user sees it once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, so a user can tell tokens apart
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used: Mapped[datetime | None] = mapped_column(DateTime)

    def public(self) -> dict:
        return {"id": self.id, "name": self.name, "prefix": self.prefix,
                "created_at": self.created_at.isoformat() + "Z",
                "last_used": self.last_used.isoformat() + "Z" if self.last_used else None}


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))  # staff importing on behalf
    group_id: Mapped[int] = mapped_column(BigInteger)
    group_name: Mapped[str] = mapped_column(String(255))
    key_values: Mapped[list] = mapped_column(JSON, default=list)  # [[key, value], ...]
    folder: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    notify: Mapped[bool] = mapped_column(Boolean, default=False)  # e-mail the owner when it ends (if it took a while)
    notified_at: Mapped[datetime | None] = mapped_column(DateTime)  # its end was handled (told, or too quick to tell)

    jobs: Mapped[list[Job]] = relationship(back_populates="batch", order_by="Job.id")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_lease", "state", "lease_expires"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True, default=lambda: str(uuid.uuid4()))
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "single" or a plugin module: converters.grouping
    state: Mapped[str] = mapped_column(String(16), default=JobState.UPLOADING)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[str] = mapped_column(Text, default="")  # staff-only diagnostics (tracebacks, retries)
    total_size: Mapped[int] = mapped_column(BigInteger, default=0)
    content_sha1: Mapped[str | None] = mapped_column(String(40))  # what duplicates are found by
    microscope: Mapped[str | None] = mapped_column(String(255))
    acquired: Mapped[str | None] = mapped_column(String(40))  # ISO-8601 with offset
    project: Mapped[str | None] = mapped_column(String(255))
    dataset: Mapped[str | None] = mapped_column(String(255))
    image_ids: Mapped[list] = mapped_column(JSON, default=list)
    # What OMERO holds for the job: [{id, name, url}], [{name, size, sha1, file_id}] (empty when not
    # kept), [{name, kind, title, file_id}]; what to check; and where each dataset of the source went.
    images: Mapped[list] = mapped_column(JSON, default=list)
    originals: Mapped[list] = mapped_column(JSON, default=list)
    attachments: Mapped[list] = mapped_column(JSON, default=list)
    warnings: Mapped[list] = mapped_column(JSON, default=list)
    accounted: Mapped[list] = mapped_column(JSON, default=list)
    link: Mapped[str | None] = mapped_column(Text)
    # False once Retry cannot help: the content itself failed, or its staged bytes were removed
    can_retry: Mapped[bool] = mapped_column(Boolean, default=True)
    limit_hit: Mapped[str | None] = mapped_column(String(16))  # "time" | "memory": its conversion was stopped
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires: Mapped[datetime | None] = mapped_column(DateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)

    batch: Mapped[Batch] = relationship(back_populates="jobs")
    files: Mapped[list[JobFile]] = relationship(back_populates="job", order_by="JobFile.id")

    def public(self) -> dict:
        """What the owner's browser may know of this job."""
        return {
            "id": self.id, "batch_id": self.batch_id, "kind": self.kind, "state": self.state,
            "progress": self.progress, "message": self.message, "microscope": self.microscope,
            "acquired": self.acquired, "project": self.project, "dataset": self.dataset,
            "image_ids": self.image_ids, "link": self.link, "total_size": self.total_size,
            # every image the job's import made or found (a multi-series file makes several), in OMERO
            "images": [{"id": i["id"], "name": i["name"], "url": i["url"]} for i in self.images or []],
            "can_retry": self.state == JobState.FAILED and self.can_retry,
            "warnings": self.warnings or [], "summary": self.summary(),
            # the rows show each image's thumbnail and each spectrum's plot
            "plots": [{"file_id": a["file_id"], "title": a["title"]} for a in self.attachments or []
                      if a["kind"] == "spectrum-plot"],
        }

    def summary(self) -> str:
        """One line on what OMERO holds for an imported job: "3 images, 7 spectra attached, originals kept"."""
        if self.state != JobState.IMPORTED:
            return ""
        images = len(self.images or self.image_ids or [])
        spectra = sum(1 for a in self.attachments or [] if a["kind"] == "spectrum-csv")
        others = len(self.attachments or []) - 2 * spectra  # each spectrum is a CSV and its plot
        parts = [f"{images} image{'s' if images != 1 else ''}"]
        if spectra:
            parts.append(f"{spectra} spectr{'a' if spectra != 1 else 'um'} attached")
        if others > 0:
            parts.append(f"{others} file{'s' if others != 1 else ''} attached")
        parts.append("originals kept" if self.originals else "originals not kept")
        return ", ".join(parts)


class JobFile(Base):
    __tablename__ = "job_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    name: Mapped[str] = mapped_column(String(4096))  # as the user named it, relative to the folder
    stored_name: Mapped[str] = mapped_column(String(255))  # safe file name in the job's staging dir
    size: Mapped[int] = mapped_column(BigInteger)
    sha1: Mapped[str | None] = mapped_column(String(40))  # set when the whole file arrived intact
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)

    job: Mapped[Job] = relationship(back_populates="files")


class JobEvent(Base):
    """Append-only: each row is the job's state after a change, in id order."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_owner_id", "owner_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    data: Mapped[dict] = mapped_column(JSON)  # Job.public() at that moment


class ContentClaim(Base):
    """One job at a time checks for and imports one content of one user in one group (app.core.claims)."""

    __tablename__ = "content_claims"

    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    group_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    content_sha1: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    worker: Mapped[str] = mapped_column(String(255))  # the run holding it (a job may be run again elsewhere)
    claimed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WorkerBeat(Base):
    """A worker says it is alive; the staff view shows who is online and what each runs."""

    __tablename__ = "worker_beats"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # Celery node name
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    concurrency: Mapped[int] = mapped_column(Integer, default=1)


class MicroscopeName(Base):
    """Staff's name for an instrument: the raw text the files carry -> the OMERO Project name."""

    __tablename__ = "microscope_names"

    raw: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    updated_by: Mapped[str] = mapped_column(String(255), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
