"""How omero-py's and Ice's exceptions reach the researcher."""
from __future__ import annotations

import pytest

from .requirements import require_omero_py

require_omero_py()

import Glacier2  # noqa: E402
import Ice  # noqa: E402
import omero  # noqa: E402

from app.core.omero.base import OmeroError, PermissionDenied, ServerUnreachable, SessionExpired  # noqa: E402
from app.core.omero.omeropy_errors import (  # noqa: E402
    CommandCancelled,
    StorageFull,
    UploadCorrupted,
    command_failed,
    translate_errors,
)


@pytest.mark.parametrize("error, expected, joining", [
    (omero.RemovedSessionException(None, None, "gone"), SessionExpired, False),
    (omero.SessionTimeoutException(None, None, "idle"), SessionExpired, False),
    (Glacier2.SessionNotExistException(), SessionExpired, False),
    (Ice.ObjectNotExistException(), SessionExpired, False),
    (Glacier2.PermissionDeniedException("Password check failed"), SessionExpired, True),
    (omero.WrappedCreateSessionException("removed", False, 0, "RemovedSessionException"), SessionExpired, True),
    (omero.WrappedCreateSessionException("busy", True, 1000, "DatabaseBusyException"), ServerUnreachable, True),
    (Ice.ConnectionRefusedException(), ServerUnreachable, False),
    (Ice.ConnectTimeoutException(), ServerUnreachable, False),
    (Ice.DNSException(), ServerUnreachable, False),
    (Ice.ConnectionLostException(), ServerUnreachable, False),
    (omero.DatabaseBusyException(), ServerUnreachable, False),
    (omero.SecurityViolation(None, None, "not a member"), PermissionDenied, False),
    (omero.ReadOnlyGroupSecurityViolation(None, None, "read-only"), PermissionDenied, False),
    (omero.ChecksumValidationException(), UploadCorrupted, False),
    (omero.ResourceError(None, None, "No space left on device"), StorageFull, False),
    (omero.OverUsageException(None, None, "over quota"), StorageFull, False),
    (omero.LockTimeout(None, None, "busy", 5000, 5), ServerUnreachable, False),
    (omero.OptimisticLockException(), ServerUnreachable, False),
    (omero.ShutdownInProgress(), ServerUnreachable, False),
    (omero.AuthenticationException("Authentication exception."), SessionExpired, True),
    (omero.AuthenticationException("Authentication exception."), OmeroError, False),
    (omero.ValidationException(None, None, "bad value"), OmeroError, False),
    (omero.InternalException(None, None, "NullPointerException"), OmeroError, False),
])
def test_known_errors_become_the_boundarys(error, expected, joining):
    with pytest.raises(expected) as caught:
        with translate_errors(joining=joining, group=lambda: "'Lab' (id 5)"):
            raise error
    assert caught.value.__cause__ is error
    assert caught.value.transient == (expected in (ServerUnreachable, UploadCorrupted, StorageFull))


@pytest.mark.parametrize("error, message", [
    (omero.ResourceError(None, None, "No space left on device"),
     "OMERO's storage is full or unavailable right now (No space left on device): the import will be tried again"),
    (omero.ValidationException(None, None, "name too long"), "OMERO refused the data as invalid (name too long)"),
    (omero.InternalException(None, None, "NullPointerException"),
     "The OMERO server hit an internal error (NullPointerException): the facility staff can see the details"),
    (omero.AuthenticationException("Authentication exception."),
     "OMERO refused to open a session: Authentication exception."),
])
def test_each_server_error_says_what_happened_and_what_follows(error, message):
    with pytest.raises(OmeroError) as caught:
        with translate_errors():
            raise error
    assert str(caught.value).startswith(message)


def test_a_command_error_is_final_unless_it_was_cancelled():
    failed = command_failed("import a.tif", omero.cmd.ERR(category="ome.formats.importer", name="bad-step",
                                                         parameters={"message": "no reader"}))
    assert str(failed) == "OMERO could not import a.tif: no reader" and not failed.transient
    cancelled = command_failed("import a.tif", omero.cmd.ERR(category="omero.cmd.Cancel", name="cancel-called",
                                                            parameters={}))
    assert isinstance(cancelled, CommandCancelled) and cancelled.transient
    assert "stopped import a.tif before it finished" in str(cancelled)


def test_an_expired_session_says_what_to_do():
    with pytest.raises(SessionExpired, match="Your OMERO session has expired: sign in again, then retry"):
        with translate_errors():
            raise omero.RemovedSessionException(None, None, "gone")


def test_a_permission_refusal_names_the_group():
    with pytest.raises(PermissionDenied, match=r"in the OMERO group 'Lab' \(id 5\) \(not a member\)"):
        with translate_errors(group=lambda: "'Lab' (id 5)"):
            raise omero.SecurityViolation(None, None, "not a member")


def test_a_refused_admin_login_is_not_an_expired_session():
    with pytest.raises(OmeroError, match="refused") as caught:
        with translate_errors():
            raise Glacier2.PermissionDeniedException("Password check failed")
    assert type(caught.value) is OmeroError


def test_unknown_errors_pass_through_unchanged():
    with pytest.raises(omero.ApiUsageException):
        with translate_errors():
            raise omero.ApiUsageException(None, None, "a bug of ours")
