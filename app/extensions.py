"""Flask extensions, made once here and bound to an app in create_app (app.factory): the blueprints take
them from here, so nothing but the entry points imports the factory."""
from __future__ import annotations

from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()
