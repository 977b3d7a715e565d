"""Settings, read once from the environment (PORTAL_*), with embedded defaults.

Every setting is listed in SETTINGS with its default; the README's table is generated from the same
list (`upload-portal settings`), so the two never drift.
"""
from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: templates/, static/, migrations/

GiB = 1 << 30


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    help: str


SETTINGS = [
    Setting("PORTAL_MODE", "embedded", "`embedded` (SQLite, embedded broker and OMERO store, local login) or `production`"),
    Setting("PORTAL_DATA_DIR", "./instance", "where embedded mode keeps its database, broker, staging and store"),
    Setting("PORTAL_SECRET_KEY", None, "signs CSRF tokens; required in production (embedded: generated once into the data dir)"),
    Setting("PORTAL_ENCRYPTION_KEY", None, "encrypts OMERO session keys at rest; required in production (embedded: generated once into the data dir)"),
    Setting("PORTAL_DATABASE_URL", None, "SQLAlchemy URL; required in production (embedded: SQLite in the data dir)"),
    Setting("PORTAL_BROKER_URL", None, "Celery broker, e.g. `redis://redis:6379/0`; required in production (embedded: SQLite in the data dir)"),
    Setting("PORTAL_STAGING_DIR", None, "where uploaded bytes wait for their job (default: `staging/` in the data dir)"),
    Setting("PORTAL_MAX_FILE_SIZE", str(200 * GiB), "largest file accepted, in bytes (larger: 413 before any byte is sent)"),
    Setting("PORTAL_STAGING_RESERVE", str(2 * GiB), "bytes the staging disk keeps free; a batch that would eat into them is refused (507)"),
    Setting("PORTAL_MAX_CHUNK", str(64 << 20), "largest upload request body, in bytes"),
    Setting("PORTAL_OMERO_BACKEND", None, "`embedded` or `omero` (default: embedded in embedded mode, omero in production)"),
    Setting("PORTAL_EMBEDDED_STORE_DIR", None, "the embedded OMERO store (default: `omero-store/` in the data dir)"),
    Setting("PORTAL_EMBEDDED_GROUPS", "Lab,Facility", "groups every local user belongs to in the embedded store (first is the default)"),
    Setting("PORTAL_OMERO_HOST", None, "OMERO server host (omero backend)"),
    Setting("PORTAL_OMERO_PORT", "4064", "OMERO server port"),
    Setting("PORTAL_OMERO_WEB_URL", None, "OMERO.web base URL, for links to imported images"),
    Setting("PORTAL_OMERO_ADMIN_USER", None, "admin (or light admin with Sudo) used to open sessions for named users"),
    Setting("PORTAL_OMERO_ADMIN_PASSWORD", None, "its password"),
    Setting("PORTAL_OIDC_DISCOVERY_URL", None, "OpenID Connect discovery document of ADFS, e.g. `https://adfs.example.org/adfs/.well-known/openid-configuration`; set it to offer ADFS sign-in"),
    Setting("PORTAL_OIDC_CLIENT_ID", None, "the portal's client id at ADFS"),
    Setting("PORTAL_OIDC_CLIENT_SECRET", None, "its client secret"),
    Setting("PORTAL_OIDC_SCOPE", "openid profile email allatclaims", "scopes asked of ADFS"),
    Setting("PORTAL_OIDC_USERNAME_CLAIMS", "upn,unique_name,email", "ID-token claims tried in order for the OMERO user name"),
    Setting("PORTAL_OIDC_USERNAME_STRIP", None, "regular expression removed from that claim, e.g. `@example\\.org$` turns `jo@example.org` into `jo`"),
    Setting("PORTAL_STAFF_USERS", None, "OMERO user names of facility staff, separated by `,` (OMERO admins are staff anyway)"),
    Setting("PORTAL_STAFF_GROUP_CLAIM", None, "ID-token claim that lists the user's ADFS groups or roles, e.g. `group`"),
    Setting("PORTAL_STAFF_GROUP_VALUE", None, "the value in that claim that makes a user facility staff"),
    Setting("PORTAL_SESSION_IDLE_MINUTES", "480", "a portal sign-in ends after this long without a request"),
    Setting("PORTAL_TIMEZONE", "UTC", "the facility's time zone: local-time sources are read in it and Datasets are named by it"),
    Setting("PORTAL_MICROSCOPE_NAMES", None, "friendly microscope names (the Project), as `raw=friendly` pairs separated by `;`, e.g. `TALOS-12TAN18C=Talos L120C`"),
    Setting("PORTAL_KEEP_ORIGINALS", "true", "keep each original file of a converted job in OMERO, attached to its images (`false`: only the converted OME-TIFF is in OMERO, and no converted job is ever confirmed for deletion)"),
    Setting("PORTAL_JOB_LEASE_SECONDS", "120", "a running job whose worker has not renewed its lease for this long is given to another worker"),
    Setting("PORTAL_JOB_MAX_ATTEMPTS", "5", "a job whose worker died this often (e.g. a file that exhausts memory) fails instead of looping"),
    Setting("PORTAL_JOB_MAX_RETRIES", "5", "retries (with backoff) of a job that met a transient error"),
    Setting("PORTAL_WORKER_CONCURRENCY", "2", "jobs one worker runs at once"),
    Setting("PORTAL_CONVERT_TIME_LIMIT", "600", "seconds a conversion may take (plus `PORTAL_CONVERT_TIME_PER_GIB` for each GiB of its files); a longer one is stopped and fails"),
    Setting("PORTAL_CONVERT_TIME_PER_GIB", "120", "seconds of conversion time added for each GiB of a job's files"),
    Setting("PORTAL_CONVERT_MEMORY_LIMIT", str(4 * GiB), "bytes of memory a conversion may allocate (beyond the worker's own); one that needs more is stopped and fails"),
    Setting("PORTAL_RETENTION_DAYS", "28", "files imported longer ago than this must leave the transfer server: users are reminded (nothing is deleted)"),
    Setting("PORTAL_REMINDER_EVERY_DAYS", "7", "a user is reminded at most this often"),
    Setting("PORTAL_STAGING_KEEP_DAYS", "14", "the transfer server keeps the bytes of failed, cancelled and never completed jobs this long (then Retry needs the files again)"),
    Setting("PORTAL_SMTP_HOST", None, "mail server for retention reminders (none: no e-mail, the page notice stays)"),
    Setting("PORTAL_SMTP_PORT", "25", "its port"),
    Setting("PORTAL_SMTP_USER", None, "login, when the server wants one (STARTTLS is used then)"),
    Setting("PORTAL_SMTP_PASSWORD", None, "its password"),
    Setting("PORTAL_MAIL_FROM", "omero-upload-portal@localhost", "sender of the reminders and notices"),
    Setting("PORTAL_NOTIFY_AFTER_MINUTES", "5", "an import that took longer than this tells its owner by e-mail when it ends, if they asked"),
    Setting("PORTAL_URL", None, "the portal's address, for links in e-mails (default: http://PORTAL_HOST:PORTAL_PORT)"),
    Setting("PORTAL_METRICS_TOKEN", None, "bearer token a Prometheus scraper sends to /metrics (staff sessions need none)"),
    Setting("PORTAL_HOST", "127.0.0.1", "`serve` listens here"),
    Setting("PORTAL_PORT", "5000", "and on this port"),
    Setting("PORTAL_WEB_THREADS", "256", "threads of the web process; each open live-status stream holds one"),
    Setting("PORTAL_BODY_TIMEOUT", "30", "seconds a request's head (request line and headers) may take to arrive whole, and its body may stay silent (an upload chunk) or take to arrive whole (forms, JSON); a client past it is cut off and its thread freed"),
    Setting("PORTAL_SSE_HEARTBEAT", "15", "seconds between keep-alive comments on idle live-status streams"),
    Setting("PORTAL_BATCH_KEYS", "Sample", "keys a researcher may give the images of an import (key-value and tag), separated by `,`"),
]


class ConfigError(RuntimeError):
    """The environment does not describe a portal that can start."""


def _env(name: str, environ) -> str | None:
    value = environ.get(name)
    if value is None or value == "":
        return next(s.default for s in SETTINGS if s.name == name)
    return value


def load(environ=None, overrides: dict | None = None) -> dict:
    """Build the Flask config mapping from the environment; refuse a production setup with holes."""
    environ = os.environ if environ is None else environ
    get = lambda name: _env(name, environ)  # noqa: E731
    mode = get("PORTAL_MODE")
    if mode not in ("embedded", "production"):
        raise ConfigError(f"PORTAL_MODE must be 'embedded' or 'production', not {mode!r}")
    data_dir = Path(get("PORTAL_DATA_DIR")).expanduser().resolve()

    if mode == "production":
        required = ("PORTAL_SECRET_KEY", "PORTAL_ENCRYPTION_KEY", "PORTAL_DATABASE_URL", "PORTAL_BROKER_URL")
        missing = [n for n in required if not get(n)]
        if missing:
            raise ConfigError("production mode needs " + ", ".join(missing) + " set in the environment")

    config = {
        "MODE": mode,
        "EMBEDDED": mode == "embedded",
        "DATA_DIR": data_dir,
        "SECRET_KEY": get("PORTAL_SECRET_KEY"),
        "ENCRYPTION_KEY": get("PORTAL_ENCRYPTION_KEY"),
        "DATABASE_URL": get("PORTAL_DATABASE_URL") or f"sqlite:///{data_dir / 'portal.sqlite'}",
        "BROKER_URL": get("PORTAL_BROKER_URL") or f"sqla+sqlite:///{data_dir / 'broker.sqlite'}",
        "STAGING_DIR": Path(get("PORTAL_STAGING_DIR") or data_dir / "staging"),
        "MAX_FILE_SIZE": int(get("PORTAL_MAX_FILE_SIZE")),
        "STAGING_RESERVE": int(get("PORTAL_STAGING_RESERVE")),
        "MAX_CHUNK": int(get("PORTAL_MAX_CHUNK")),
        "OMERO_BACKEND": get("PORTAL_OMERO_BACKEND") or ("embedded" if mode == "embedded" else "omero"),
        "EMBEDDED_STORE_DIR": Path(get("PORTAL_EMBEDDED_STORE_DIR") or data_dir / "omero-store"),
        "EMBEDDED_GROUPS": [g.strip() for g in get("PORTAL_EMBEDDED_GROUPS").split(",") if g.strip()],
        "OMERO_HOST": get("PORTAL_OMERO_HOST"),
        "OMERO_PORT": int(get("PORTAL_OMERO_PORT")),
        "OMERO_WEB_URL": get("PORTAL_OMERO_WEB_URL"),
        "OMERO_ADMIN_USER": get("PORTAL_OMERO_ADMIN_USER"),
        "OMERO_ADMIN_PASSWORD": get("PORTAL_OMERO_ADMIN_PASSWORD"),
        "OIDC_DISCOVERY_URL": get("PORTAL_OIDC_DISCOVERY_URL"),
        "OIDC_CLIENT_ID": get("PORTAL_OIDC_CLIENT_ID"),
        "OIDC_CLIENT_SECRET": get("PORTAL_OIDC_CLIENT_SECRET"),
        "OIDC_SCOPE": get("PORTAL_OIDC_SCOPE"),
        "OIDC_USERNAME_CLAIMS": _list(get("PORTAL_OIDC_USERNAME_CLAIMS")),
        "OIDC_USERNAME_STRIP": _regex("PORTAL_OIDC_USERNAME_STRIP", get("PORTAL_OIDC_USERNAME_STRIP")),
        "STAFF_USERS": set(_list(get("PORTAL_STAFF_USERS"))),
        "STAFF_GROUP_CLAIM": get("PORTAL_STAFF_GROUP_CLAIM"),
        "STAFF_GROUP_VALUE": get("PORTAL_STAFF_GROUP_VALUE"),
        "SESSION_IDLE_MINUTES": int(get("PORTAL_SESSION_IDLE_MINUTES")),
        "TIMEZONE": get("PORTAL_TIMEZONE"),
        "MICROSCOPE_NAMES": _pairs("PORTAL_MICROSCOPE_NAMES", get("PORTAL_MICROSCOPE_NAMES") or ""),
        "KEEP_ORIGINALS": _flag("PORTAL_KEEP_ORIGINALS", get("PORTAL_KEEP_ORIGINALS")),
        "JOB_LEASE_SECONDS": int(get("PORTAL_JOB_LEASE_SECONDS")),
        "JOB_MAX_ATTEMPTS": int(get("PORTAL_JOB_MAX_ATTEMPTS")),
        "JOB_MAX_RETRIES": int(get("PORTAL_JOB_MAX_RETRIES")),
        "WORKER_CONCURRENCY": int(get("PORTAL_WORKER_CONCURRENCY")),
        "CONVERT_TIME_LIMIT": float(get("PORTAL_CONVERT_TIME_LIMIT")),
        "CONVERT_TIME_PER_GIB": float(get("PORTAL_CONVERT_TIME_PER_GIB")),
        "CONVERT_MEMORY_LIMIT": int(get("PORTAL_CONVERT_MEMORY_LIMIT")),
        "METRICS_TOKEN": get("PORTAL_METRICS_TOKEN"),
        "RETENTION_DAYS": int(get("PORTAL_RETENTION_DAYS")),
        "REMINDER_EVERY_DAYS": int(get("PORTAL_REMINDER_EVERY_DAYS")),
        "STAGING_KEEP_DAYS": int(get("PORTAL_STAGING_KEEP_DAYS")),
        "SMTP_HOST": get("PORTAL_SMTP_HOST"),
        "SMTP_PORT": int(get("PORTAL_SMTP_PORT")),
        "SMTP_USER": get("PORTAL_SMTP_USER"),
        "SMTP_PASSWORD": get("PORTAL_SMTP_PASSWORD"),
        "MAIL_FROM": get("PORTAL_MAIL_FROM"),
        "NOTIFY_AFTER_MINUTES": float(get("PORTAL_NOTIFY_AFTER_MINUTES")),
        "PORTAL_URL": (get("PORTAL_URL") or f"http://{get('PORTAL_HOST')}:{get('PORTAL_PORT')}").rstrip("/"),
        "HOST": get("PORTAL_HOST"),
        "PORT": int(get("PORTAL_PORT")),
        "WEB_THREADS": int(get("PORTAL_WEB_THREADS")),
        "SSE_HEARTBEAT": float(get("PORTAL_SSE_HEARTBEAT")),
        "BODY_TIMEOUT": float(get("PORTAL_BODY_TIMEOUT")),
        "BATCH_KEYS": list(dict.fromkeys(k.strip() for k in get("PORTAL_BATCH_KEYS").split(",") if k.strip())),
        "MAX_CONTENT_LENGTH": None,  # upload bodies are streamed and limited by MAX_CHUNK per request
        "SESSION_COOKIE_NAME": "portal_session",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": mode == "production",
        "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the signed-in session
    }
    config.update(overrides or {})
    if config["OMERO_BACKEND"] == "omero" and not config["OMERO_HOST"]:
        raise ConfigError("the omero backend needs PORTAL_OMERO_HOST set in the environment")
    if config["OIDC_DISCOVERY_URL"] and not config["OIDC_CLIENT_ID"]:
        raise ConfigError("ADFS sign-in (PORTAL_OIDC_DISCOVERY_URL) needs PORTAL_OIDC_CLIENT_ID set in the environment")
    if bool(config["STAFF_GROUP_CLAIM"]) != bool(config["STAFF_GROUP_VALUE"]):
        raise ConfigError("set both PORTAL_STAFF_GROUP_CLAIM and PORTAL_STAFF_GROUP_VALUE, or neither")
    if not config["SECRET_KEY"]:
        config["SECRET_KEY"] = _embedded_secret(config["DATA_DIR"], "secret_key")
    if not config["ENCRYPTION_KEY"]:
        config["ENCRYPTION_KEY"] = _embedded_secret(config["DATA_DIR"], "encryption_key")
    return config


def _flag(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise ConfigError(f"{name} must be true or false, not {text!r}")
    return value in ("true", "1", "yes", "on")


def _list(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _regex(name: str, text: str | None) -> re.Pattern | None:
    if not text:
        return None
    try:
        return re.compile(text)
    except re.error as e:
        raise ConfigError(f"{name}: {text!r} is not a regular expression ({e})") from None


def _pairs(name: str, text: str) -> dict[str, str]:
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        raw, sep, friendly = item.partition("=")
        if not sep or not raw.strip() or not friendly.strip():
            raise ConfigError(f"{name}: {item!r} is not a `raw=friendly` pair")
        pairs[raw.strip()] = friendly.strip()
    return pairs


def _embedded_secret(data_dir: Path, name: str) -> str:
    """A random key made once per embedded install and kept private in its data dir."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{s.name}` | {f'`{s.default}`' if s.default else '—'} | {s.help} |" for s in SETTINGS]
    return "\n".join(rows)
