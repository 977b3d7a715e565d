"""Usage: imports, files, bytes and durations per day, microscope, group and user; charts drawn as
SVG on the server (nothing to load from elsewhere), a CSV export, and Prometheus metrics."""
from __future__ import annotations

import csv
import hmac
import io
from collections import defaultdict
from datetime import timedelta

from flask import Response, current_app, flash, g, redirect, render_template, request, url_for
from markupsafe import Markup, escape
from sqlalchemy import func, select

from app.auth.guards import staff_required
from app.core import retention
from app.core.db import utcnow
from app.core.models import Batch, Job, JobFile, JobState, User
from app.staff import bp
from app.staff.jobs import queue_status

DIMENSIONS = ("day", "microscope", "group", "user")


def usage_rows(db, days: int) -> list[dict]:
    """One row per imported job of the last `days` days (the unit every table sums)."""
    since = utcnow() - timedelta(days=days)
    files = select(JobFile.job_id, func.count(JobFile.id).label("n")).group_by(JobFile.job_id).subquery()
    query = (select(Job.finished_at, Job.started_at, Job.microscope, Job.total_size, Batch.group_name,
                    User.username, files.c.n)
             .join(Batch, Batch.id == Job.batch_id).join(User, User.id == Job.owner_id)
             .join(files, files.c.job_id == Job.id)
             .where(Job.state == JobState.IMPORTED, Job.finished_at >= since))
    return [{"day": done.date().isoformat(), "microscope": microscope or "unknown microscope", "group": group,
             "user": user, "files": n, "bytes": size,
             "seconds": (done - started).total_seconds() if started else 0.0}
            for done, started, microscope, size, group, user, n in db.execute(query)]


def summarise(rows: list[dict], by: str) -> list[dict]:
    totals: dict[str, dict] = defaultdict(lambda: {"imports": 0, "files": 0, "bytes": 0, "seconds": 0.0})
    for row in rows:
        total = totals[row[by]]
        total["imports"] += 1
        total["files"] += row["files"]
        total["bytes"] += row["bytes"]
        total["seconds"] += row["seconds"]
    return [{by: key, **value, "mean_seconds": value["seconds"] / value["imports"]}
            for key, value in sorted(totals.items())]


def bar_chart(title: str, bars: list[tuple[str, float]], unit: str = "") -> Markup:
    """A horizontal bar chart as inline SVG, each label whole on its own line above its bar; labels
    are escaped text. It scales down to the page's width."""
    height, width = 38 * len(bars) + 30, 480
    top = max((value for _, value in bars), default=0) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for i, (label, value) in enumerate(bars):
        y, w = 24 + 38 * i, (width - 90) * value / top
        parts.append(f'<text x="0" y="{y + 13}" font-size="13">{escape(label)}</text>'
                     f'<rect x="0" y="{y + 18}" width="{w:.1f}" height="14" fill="#1f3a5f"/>'
                     f'<text x="{w + 6:.1f}" y="{y + 30}" font-size="12">{value:,.3g}{escape(unit)}</text>')
    parts.append(f'<text x="0" y="14" font-size="14" font-weight="600">{escape(title)}</text></svg>')
    return Markup("".join(parts))


def _requested_rows() -> tuple[int, list[dict]]:
    days = request.args.get("days", default=30, type=int)
    with current_app.extensions["services"].db.session() as db:
        return days, usage_rows(db, days)


@bp.get("/staff/usage")
@staff_required
def usage():
    """Show imports, files, bytes and durations by day, microscope, group and user."""
    days, rows = _requested_rows()
    tables = {by: summarise(rows, by) for by in DIMENSIONS}
    charts = [bar_chart(f"Imports per {by}", [(str(r[by]), r["imports"]) for r in tables[by]])
              for by in ("day", "microscope")]
    charts.append(bar_chart("GB imported per group", [(r["group"], r["bytes"] / 1e9) for r in tables["group"]], " GB"))
    return render_template("staff_usage.html", days=days, tables=tables, charts=charts, total=len(rows))


@bp.get("/staff/usage.csv")
@staff_required
def usage_csv():
    """Download the usage rows behind the tables as CSV."""
    days, rows = _requested_rows()
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["day", "microscope", "group", "user", "files", "bytes", "seconds"])
    writer.writeheader()
    writer.writerows(rows)
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename=portal-usage-{days}d.csv"})


@bp.get("/staff/retention")
@staff_required
def retention_page():
    """List, per user, the files imported longer ago than the retention time."""
    days = current_app.config["RETENTION_DAYS"]
    with current_app.extensions["services"].db.session() as db:
        entries = retention.due(db, days)
    return render_template("staff_retention.html", days=days, entries=entries,
                           mail=bool(current_app.config["SMTP_HOST"]))


@bp.post("/staff/retention/remind")
@staff_required
def remind():
    """Send the retention reminders now (the daily task does the same)."""
    sent = retention.send_reminders(current_app.extensions["services"])
    flash(f"{sent} reminder(s) sent", "info")
    return redirect(url_for("staff.retention_page"))


def metrics_allowed() -> bool:
    token = current_app.config["METRICS_TOKEN"]
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return bool(token and given and hmac.compare_digest(given, token)) or bool(g.user and g.user.is_staff)


@bp.get("/metrics")
def metrics():
    """Prometheus metrics: queue depth, jobs by state, durations, failures, bytes."""
    if not metrics_allowed():
        return Response("staff session or PORTAL_METRICS_TOKEN bearer token required\n", 403, mimetype="text/plain")
    with current_app.extensions["services"].db.session() as db:
        by_state = dict(db.execute(select(Job.state, func.count(Job.id)).group_by(Job.state)).all())
        imported = db.execute(select(func.count(Job.id), func.coalesce(func.sum(Job.total_size), 0))
                              .where(Job.state == JobState.IMPORTED)).one()
        durations = [(done - started).total_seconds() for done, started in db.execute(
            select(Job.finished_at, Job.started_at).where(Job.state == JobState.IMPORTED, Job.started_at.is_not(None)))]
        status = queue_status(db)
    lines = ["# HELP portal_jobs Jobs by state.", "# TYPE portal_jobs gauge"]
    states = [JobState.UPLOADING, JobState.QUEUED, *JobState.RUNNING, *JobState.FINAL]
    lines += [f'portal_jobs{{state="{state}"}} {by_state.get(state, 0)}' for state in states]
    lines += ["# HELP portal_queue_depth Jobs waiting for a worker.", "# TYPE portal_queue_depth gauge",
              f"portal_queue_depth {status['queue_depth']}",
              "# HELP portal_queue_oldest_seconds Age of the oldest queued job.", "# TYPE portal_queue_oldest_seconds gauge",
              f"portal_queue_oldest_seconds {status['oldest_queued_seconds'] or 0}",
              "# HELP portal_workers_online Workers seen recently.", "# TYPE portal_workers_online gauge",
              f"portal_workers_online {status['online']}",
              "# HELP portal_jobs_failed Jobs that ended failed.", "# TYPE portal_jobs_failed gauge",
              f"portal_jobs_failed {by_state.get(JobState.FAILED, 0)}",
              "# HELP portal_imported_bytes Bytes of the files behind imported jobs.", "# TYPE portal_imported_bytes gauge",
              f"portal_imported_bytes {imported[1]}",
              "# HELP portal_job_duration_seconds From a worker's start to imported.",
              "# TYPE portal_job_duration_seconds histogram"]
    for bound in (1, 5, 15, 60, 300, 900, 3600):
        lines.append(f'portal_job_duration_seconds_bucket{{le="{bound}"}} {sum(d <= bound for d in durations)}')
    lines += [f'portal_job_duration_seconds_bucket{{le="+Inf"}} {len(durations)}',
              f"portal_job_duration_seconds_sum {sum(durations):.3f}", f"portal_job_duration_seconds_count {len(durations)}"]
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")
