"""The client's exceptions: one per gRPC status a caller acts on differently."""

from __future__ import annotations

from typing import Any

import grpc

__all__ = [
    "Broken",
    "ContractError",
    "InvalidArgument",
    "NotFound",
    "TokenFetcherError",
    "Unavailable",
    "code_from_number",
    "error_for",
]

_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class TokenFetcherError(Exception):
    """A call that failed; ``code`` is the grpc.StatusCode (None when the client itself
    found the problem) and ``details`` the server's message."""

    def __init__(self, details: str, code: grpc.StatusCode | None = None) -> None:
        self.details = details
        self.code = code
        super().__init__(f"{code.name}: {details}" if code is not None else details)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.details, self.code))


class NotFound(TokenFetcherError):
    """NOT_FOUND: no such cluster, workflow, job or fingerprint."""


class Broken(TokenFetcherError):
    """FAILED_PRECONDITION: the workflow fails to parse and there is no good version."""


class InvalidArgument(TokenFetcherError):
    """INVALID_ARGUMENT: a malformed request (a run time off the schedule, say)."""


class Unavailable(TokenFetcherError):
    """UNAVAILABLE, DEADLINE_EXCEEDED or (server-side) CANCELLED after the retries: the
    server is unreachable, overloaded, shutting down, or the cluster is still loading."""


class ContractError(TokenFetcherError):
    """The server's answer breaks the contract (e.g. a handover that disagrees with the
    spec's schedule); raised by the client, ``code`` is None."""


_ERROR_CLASSES: dict[grpc.StatusCode, type[TokenFetcherError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: Broken,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.CANCELLED: Unavailable,
}


def error_for(code: grpc.StatusCode, details: str) -> TokenFetcherError:
    """The TokenFetcherError subclass for a status code (the base class for others)."""
    return _ERROR_CLASSES.get(code, TokenFetcherError)(details, code)


def code_from_number(number: int) -> grpc.StatusCode:
    """The status code of a number (a batch item's ``error.code``)."""
    return _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)
