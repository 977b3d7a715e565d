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
    ServerLimit,
    StorageFull,
    UploadCorrupted,
    command_failed,
    translate_errors,
)


@pytest.mark.parametrize("error, expected, joining", [
    # omero-py's createSession/joinSession after its retries of a server still starting: transient
    (omero.ClientError("Obtained null object prox"), ServerUnreachable, True),
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
    # a query that timed out, or too many services open (QueryImpl, ServantHolder): no quota, it passes
    (omero.OverUsageException(None, None, "query failed, probable timeout"), ServerLimit, False),
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
    assert caught.value.transient == (expected in (ServerUnreachable, UploadCorrupted, StorageFull, ServerLimit))


def test_a_client_error_outside_opening_a_session_is_our_bug_and_propagates():
    with pytest.raises(omero.ClientError):
        with translate_errors():
            raise omero.ClientError("No session available")


@pytest.mark.parametrize("error, message", [
    (omero.ResourceError(None, None, "No space left on device"),
     "OMERO's storage is full or unavailable right now (No space left on device): the import will be tried again"),
    (omero.ValidationException(None, None, "name too long"), "OMERO refused the data as invalid (name too long)"),
    (omero.InternalException(None, None, "NullPointerException"),
     "The OMERO server hit an internal error (NullPointerException): the facility staff can see the details"),
    (omero.AuthenticationException("Authentication exception."),
     "OMERO refused to open a session: Authentication exception."),
    (omero.OverUsageException(None, None, "query failed, probable timeout"),
     "OMERO is over one of its limits on queries or open services right now (query failed, probable timeout): "
     "the import will be tried again later"),
])
def test_each_server_error_says_what_happened_and_what_follows(error, message):
    with pytest.raises(OmeroError) as caught:
        with translate_errors():
            raise error
    assert str(caught.value).startswith(message)


IMPORT = "::omero::grid::ImportRequest"  # an import's ERR.category: its request's type (Helper.fail)


def test_a_command_error_is_final_unless_it_was_cancelled():
    failed = command_failed("import a.tif", omero.cmd.ERR(category=IMPORT, name="import-request-failure",
                                                         parameters={"message": "no reader"}))
    assert str(failed) == "OMERO could not import a.tif: no reader" and not failed.transient and failed.retry_helps
    for name in ("cancel-called", "not-ready"):  # HandleI: closed or cancelled, and the step that found it so
        cancelled = command_failed("import a.tif", omero.cmd.ERR(category=IMPORT, name=name, parameters={}))
        assert isinstance(cancelled, CommandCancelled) and cancelled.transient
        assert "stopped import a.tif before it finished" in str(cancelled)


@pytest.mark.parametrize("name, says, retry_helps", [
    ("import-unknown-format", "does not recognise this file's format", False),
    ("import-file-exception", "could not read the file: it may be damaged or truncated", False),
    ("import-missing-library", "lacks a library to read this format", True),
])
def test_the_importers_errors_say_whether_retry_can_help(name, says, retry_helps):
    """ManagedImportRequestI.step names what failed; the researcher's row says it and whether Retry helps."""
    error = command_failed("import a.czi", omero.cmd.ERR(category=IMPORT, name=name, parameters={
        "filename": "/repo/a.czi", "message": "Unsupported compression"}))
    assert says in str(error) and "Unsupported compression" in str(error)
    assert (error.transient, error.retry_helps) == (False, retry_helps)


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
