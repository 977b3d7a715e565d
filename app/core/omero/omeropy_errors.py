"""What omero-py and Ice raise, said in the boundary's terms with messages a researcher can act on.

Every server exception (omero/ServerErrors.ice) is either translated here into a message and a
transient-or-final verdict, or is a bug of ours (ApiUsageException, QueryException) and propagates
unchanged, so it shows up as a bug and not as "OMERO said no". A command's ERR response (import,
delete) is translated by `command_failed`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import Glacier2
import Ice
import omero

from app.core.omero.base import OmeroError, PermissionDenied, ServerUnreachable, SessionExpired

log = logging.getLogger(__name__)


class UploadCorrupted(OmeroError):
    """OMERO's checksum of an uploaded file differs from ours: the bytes changed in transit."""

    transient = True


class CommandCancelled(OmeroError):
    """The server stopped a command before its end (its handle closed, the server restarting)."""

    transient = True


class StorageFull(OmeroError):
    """OMERO's repository disk cannot take the data now; space may be freed."""

    transient = True


class ServerLimit(OmeroError):
    """OMERO refused a call over one of its limits on queries or open services (OverUsageException):
    the load passes. OMERO has no per-user storage quota that raises it."""

    transient = True


# The session is gone: timed out, or closed by its owner or an admin.
_SESSION_GONE = (
    omero.SessionException,  # RemovedSessionException, SessionTimeoutException
    Glacier2.SessionNotExistException,
    # The Glacier2 session behind our proxies was destroyed (e.g. killed from OMERO.web).
    Ice.ObjectNotExistException,
)

# The network or the server is down or slow; worth retrying later.
_UNREACHABLE = (
    Ice.ConnectFailedException,  # includes ConnectionRefusedException
    Ice.ConnectionLostException,
    Ice.TimeoutException,  # includes ConnectTimeoutException
    Ice.DNSException,
)

class FileRefused(OmeroError):
    """OMERO's importer could not read the file itself: sending it again fails the same way."""

    retry_helps = False


# Cancellations and the commands the server aborts because of them (omero-blitz omero/cmd/HandleI:
# "cancel-called" when the handle is closed or cancelled, "not-ready" for the step that finds it so):
# transient, run again.
CANCELLED_ERRS = {"cancel-called", "not-ready"}
# What ManagedImportRequestI.step names a failed import (omero-blitz ome/services/blitz/repo), with
# what it means for the researcher; `None`: the file itself is not at fault.
IMPORT_ERRS = {
    "import-unknown-format": "Bio-Formats on the OMERO server does not recognise this file's format",
    "import-file-exception": "the OMERO server could not read the file: it may be damaged or truncated",
    "import-missing-library": None,  # the server lacks a reader library: the facility staff must add it
    "import-request-failure": None,  # anything else the server hit
}


def _group_phrase(group: Callable[[], str | None] | None) -> str:
    name = group() if group is not None else None
    return f"in the OMERO group {name}" if name else "in this OMERO group"


def _detail(e: omero.ServerError) -> str:
    return f" ({e.message})" if getattr(e, "message", "") else ""


@contextmanager
def translate_errors(*, joining: bool = False, opening: bool = False,
                     group: Callable[[], str | None] | None = None) -> Iterator[None]:
    """Re-raise omero-py's and Ice's errors as the boundary's.

    joining: we are presenting a session key; a refusal then means the key is not (or no longer) valid.
    opening: we are creating or joining a session (joining implies it).
    group: names the group the call acts in, for permission messages (called only then).
    """
    try:
        yield
    except omero.ClientError as e:
        # omero-py's BaseClient.createSession (joinSession too) retries a server that is not fully
        # initialized or too slow to connect, then raises ClientError ("Obtained null object proxy"):
        # the server is starting or unreachable. Elsewhere a ClientError is our misuse of omero-py.
        if not (opening or joining):
            raise
        log.info("OMERO did not open a session: %s", e)
        raise ServerUnreachable("The OMERO server did not open a session (it may be starting up): "
                                "the import will be retried") from e
    except omero.ShutdownInProgress as e:  # a SessionException, but the server comes back
        raise ServerUnreachable("The OMERO server is restarting: the import will be retried") from e
    except _SESSION_GONE as e:
        raise SessionExpired() from e
    except omero.WrappedCreateSessionException as e:
        if e.concurrency:  # the server asks us to back off and try again
            raise ServerUnreachable("The OMERO server is busy right now: the import will be retried") from e
        if joining:
            raise SessionExpired() from e
        raise OmeroError(f"OMERO could not open a session: {e.reason or e.type}") from e
    except (Glacier2.PermissionDeniedException, Glacier2.CannotCreateSessionException) as e:
        # CannotCreateSessionException includes omero.AuthenticationException (wrong password).
        if joining:
            # Glacier2 refuses to join a key that names no live session.
            raise SessionExpired() from e
        raise OmeroError(f"OMERO refused to open a session: {e.reason or type(e).__name__}") from e
    except omero.SecurityViolation as e:
        raise PermissionDenied(
            f"You do not have permission to do this {_group_phrase(group)}{_detail(e)}. "
            "Choose a group you are a member of, or ask the facility staff."
        ) from e
    except omero.ChecksumValidationException as e:
        raise UploadCorrupted(
            "The file arrived at OMERO with a different checksum than it left with: it will be sent again"
        ) from e
    except omero.ValidationException as e:
        raise OmeroError(f"OMERO refused the data as invalid{_detail(e)}") from e
    except omero.OverUsageException as e:
        # A limit on a query's result size or on a session's open services (omero.throttling), not
        # a quota: it passes with the load.
        raise ServerLimit(
            f"OMERO is over one of its limits on queries or open services right now{_detail(e)}: the import "
            "will be tried again later; tell the facility staff if this persists"
        ) from e
    except omero.ResourceError as e:
        # RawFileBean raises ResourceError when the repository's disk cannot take a write; it clears
        # when space is freed.
        raise StorageFull(
            f"OMERO's storage is full or unavailable right now{_detail(e)}: the import will be tried "
            "again later; tell the facility staff if this persists"
        ) from e
    except omero.InternalException as e:
        raise OmeroError(
            f"The OMERO server hit an internal error{_detail(e)}: the facility staff can see the details"
        ) from e
    except omero.ConcurrencyException as e:  # DatabaseBusy, TryAgain, LockTimeout, OptimisticLock...
        raise ServerUnreachable("The OMERO server is busy right now: the import will be retried") from e
    except _UNREACHABLE as e:
        log.info("OMERO unreachable: %s", type(e).__name__)
        raise ServerUnreachable() from e


def command_failed(what: str, err) -> OmeroError:
    """The boundary's error for a command (import, delete) that answered with omero.cmd.ERR; its
    category is the request's type (Helper.fail: request.ice_id()), its name says what failed."""
    params = err.parameters or {}
    detail = params.get("message") or params.get("stacktrace", "").split("\n", 1)[0] or f"{err.category}/{err.name}"
    if err.name in CANCELLED_ERRS:
        return CommandCancelled(f"OMERO stopped {what} before it finished ({detail}): it will be tried again")
    if IMPORT_ERRS.get(err.name):
        return FileRefused(f"OMERO could not {what}: {IMPORT_ERRS[err.name]} ({detail})")
    if err.name == "import-missing-library":
        return OmeroError(f"OMERO could not {what}: the server lacks a library to read this format ({detail}); "
                          "the facility staff must install it, then Retry")
    return OmeroError(f"OMERO could not {what}: {detail}")
