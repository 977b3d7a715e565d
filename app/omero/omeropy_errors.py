"""What omero-py and Ice raise, said in the boundary's terms with messages a researcher can act on.

Only the exceptions we know the meaning of are translated; anything else propagates unchanged, so a
bug shows up as a bug and not as "OMERO said no".
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import Glacier2
import Ice
import omero

from app.omero.base import OmeroError, PermissionDenied, ServerUnreachable, SessionExpired

log = logging.getLogger(__name__)


class UploadCorrupted(OmeroError):
    """OMERO's checksum of an uploaded file differs from ours: the bytes changed in transit."""

    transient = True


# The session is gone: timed out, or closed by its owner or an admin.
_SESSION_GONE = (
    omero.RemovedSessionException,
    omero.SessionTimeoutException,
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

_BUSY = (omero.DatabaseBusyException, omero.TryAgain)


def _group_phrase(group: Callable[[], str | None] | None) -> str:
    name = group() if group is not None else None
    return f"in the OMERO group {name}" if name else "in this OMERO group"


@contextmanager
def translate_errors(*, joining: bool = False, group: Callable[[], str | None] | None = None) -> Iterator[None]:
    """Re-raise omero-py's and Ice's errors as the boundary's.

    joining: we are presenting a session key; a refusal then means the key is not (or no longer) valid.
    group: names the group the call acts in, for permission messages (called only then).
    """
    try:
        yield
    except _SESSION_GONE as e:
        raise SessionExpired() from e
    except omero.WrappedCreateSessionException as e:
        if e.concurrency:  # the server asks us to back off and try again
            raise ServerUnreachable("The OMERO server is busy right now: the import will be retried") from e
        if joining:
            raise SessionExpired() from e
        raise OmeroError(f"OMERO could not open a session: {e.reason or e.type}") from e
    except (Glacier2.PermissionDeniedException, Glacier2.CannotCreateSessionException) as e:
        if joining:
            # Glacier2 refuses to join a key that names no live session.
            raise SessionExpired() from e
        raise OmeroError(f"OMERO refused to open a session: {e.reason or type(e).__name__}") from e
    except omero.SecurityViolation as e:
        detail = f" ({e.message})" if e.message else ""
        raise PermissionDenied(
            f"You do not have permission to do this {_group_phrase(group)}{detail}. "
            "Choose a group you are a member of, or ask the facility staff."
        ) from e
    except omero.ChecksumValidationException as e:
        raise UploadCorrupted(
            "The file arrived at OMERO with a different checksum than it left with: it will be sent again"
        ) from e
    except _BUSY as e:
        raise ServerUnreachable("The OMERO server is busy right now: the import will be retried") from e
    except _UNREACHABLE as e:
        log.info("OMERO unreachable: %s", type(e).__name__)
        raise ServerUnreachable() from e
