"""Staff name the microscopes: raw instrument text -> OMERO Project name, applied from the next job on."""
from __future__ import annotations

from flask import current_app, flash, g, redirect, render_template, request, url_for

from app.auth.guards import staff_required
from app.core import microscopes
from app.staff import bp

MAX_NAME = 255


@bp.get("/staff/microscopes")
@staff_required
def microscopes_page():
    """List the microscope names in use and the raw instrument names no entry maps yet."""
    with current_app.extensions["services"].db.session() as db:
        names = microscopes.table(current_app.extensions["services"], db)
        unmapped = microscopes.unmapped(db, names)
    return render_template("staff_microscopes.html", names=sorted(names.items(), key=lambda kv: kv[0].casefold()),
                           unmapped=unmapped, initial=current_app.config["MICROSCOPE_NAMES"])


@bp.post("/staff/microscopes")
@staff_required
def save_microscope():
    """Save one mapping (an empty name removes the portal's entry)."""
    raw, name = request.form.get("raw", "").strip(), request.form.get("name", "").strip()
    if not raw or len(raw) > MAX_NAME or len(name) > MAX_NAME or not (raw + name).isprintable() or "/" in name:
        flash(f"Give the instrument's name as files carry it and a Project name (up to {MAX_NAME} characters, no '/')", "error")
        return redirect(url_for("staff.microscopes_page"), 303)
    with current_app.extensions["services"].db.session() as db:
        microscopes.save(db, raw, name, g.user.username)
    flash(f"{raw} now goes to the Project {name}: from the next job on" if name
          else f"The portal's name for {raw} was removed", "info")
    return redirect(url_for("staff.microscopes_page"), 303)
