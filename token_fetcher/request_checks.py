"""What a request must be before the service answers it: names, whole-second times in
the range the job runner can express, run times on the schedule's grid, page tokens this
server issued. A request that is not raises ``Failure`` with the status code and a
message saying what is wrong."""

from __future__ import annotations

import base64

import grpc

from legacy_parser.limits import name_problem
from legacy_parser.schedule import is_on_grid, last_run_at_or_before, next_run_after
from token_fetcher import convert
from token_fetcher.snapshot import Version

__all__ = [
    "MAX_EPOCH",
    "MIN_EPOCH",
    "Failure",
    "after_token",
    "check_name",
    "check_scheduled",
    "check_time",
    "decode",
    "invalid",
    "page_token",
]

# Far longer than the token of any name a request may carry (512 characters): a longer
# one was not issued by this server, and is refused before it is decoded.
MAX_PAGE_TOKEN_LENGTH = 16384
# Run times the job runner's end_date can express (years 1 to 9999).
MIN_EPOCH = -62135596800 + 86400
MAX_EPOCH = 253402300799


class Failure(Exception):
    """A request that cannot be answered: a status code and a message saying why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> Failure:
    return Failure(grpc.StatusCode.INVALID_ARGUMENT, message)


def decode(message_class, data: bytes):
    """``data`` as a ``message_class``. Decoded here rather than by grpc, which would
    answer INTERNAL for bytes that are not one."""
    try:
        return message_class.FromString(data)
    except Exception as error:  # noqa: BLE001 - protobuf's DecodeError; its module varies
        raise invalid(f"the request is not a valid {message_class.DESCRIPTOR.full_name} "
                      f"message: {error}") from None


def check_name(value: str, what: str, required: bool = True) -> str:
    if not value:
        if required:
            raise invalid(f"{what} is required")
        return value
    problem = name_problem(value)
    if problem:
        raise invalid(f"{what} {problem}")
    return value


def check_time(stamp, what: str, present: bool) -> int:
    if not present:
        raise invalid(f"{what} is required")
    if stamp.nanos:
        raise invalid(f"{what} must be whole seconds, got {stamp.nanos} nanoseconds")
    if not MIN_EPOCH <= stamp.seconds <= MAX_EPOCH:
        raise invalid(f"{what} {stamp.seconds} s is outside years 0001 to 9999")
    return stamp.seconds


def check_scheduled(version: Version, run_epoch: int, name: str) -> None:
    """A run time must be one of the schedule's runs (a manual run skips this check):
    rendered tokens for any other time name a run that never happens."""
    schedule = version.workflow.schedule
    reference, every = schedule.reference_epoch, schedule.recurrence_seconds
    if is_on_grid(reference, every, run_epoch):
        return

    def iso(epoch: int) -> str:
        if not MIN_EPOCH - 86400 <= epoch <= MAX_EPOCH:  # a next run after year 9999
            return f"{epoch} s after the epoch"
        return convert.timestamp(epoch).ToJsonString()

    when = f"run_time {iso(run_epoch)} is not a scheduled run of {name}"
    if run_epoch < reference:
        where = f"it is before the schedule's reference time; the first run is {iso(reference)}"
    else:
        where = (f"the previous run is {iso(last_run_at_or_before(reference, every, run_epoch))}"
                 f", the next {iso(next_run_after(reference, every, run_epoch))}")
    raise invalid(f"{when}: {where} (every {every} s from {iso(reference)}); "
                   "set manual for a run off the schedule")


def page_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def after_token(token: str) -> str:
    # b64decode drops characters outside the alphabet, so "!!!!" would decode to "" and
    # silently restart the listing: accept only what _page_token gives back exactly.
    if len(token) > MAX_PAGE_TOKEN_LENGTH:
        raise invalid(f"page_token {token[:40]!r}... ({len(token)} characters) is not one "
                       "this server issued")
    try:
        name = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeError):
        name = ""
    if not name or page_token(name) != token:
        raise invalid(f"page_token {token[:40]!r} is not one this server issued")
    return name
