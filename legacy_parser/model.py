"""Immutable typed values produced by the parser.

Everything here is plain data: it crosses the sandbox boundary as JSON (never
pickle, so nothing a definition does can run code in the server) and is turned
into protobuf by the service.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass

WORKFLOW_START_INPUT = "__WORKFLOW_START__"
FINAL_JOB_NAME = "final"
DEFAULT_MAX_RUNNING_INSTANCES = 3
DEFAULT_JOB_PRIORITY = 1.0


class OverrunPolicy(enum.IntEnum):
    """Pinball's overrun policies, with Pinball's numeric values."""

    SKIP = 0
    ABORT_RUNNING = 1
    DELAY = 2
    DELAY_UNTIL_SUCCESS = 3
    START_NEW = 4


class JobKind(enum.StrEnum):
    JOB = "job"
    CONDITION = "condition"


class ErrorKind(enum.StrEnum):
    """What went wrong; one value per failure a user can cause."""

    SYNTAX_ERROR = "syntax_error"
    IMPORT_ERROR = "import_error"
    EXCEPTION_AT_IMPORT = "exception_at_import"
    MISSING_WORKFLOWS = "missing_workflows"
    NOT_A_DICT = "not_a_dict"
    INVALID_DEFINITION = "invalid_definition"
    MISSING_PARENT = "missing_parent"
    RESERVED_JOB_NAME = "reserved_job_name"
    CYCLE = "cycle"
    INVALID_RECURRENCE = "invalid_recurrence"
    INVALID_SCHEDULE = "invalid_schedule"
    UNKNOWN_OVERRUN_POLICY = "unknown_overrun_policy"
    COMMAND_FORMAT = "command_format"
    WRONG_TEMPLATE_TYPE = "wrong_template_type"
    TEMPLATE_ERROR = "template_error"
    UNKNOWN_ATTRIBUTE = "unknown_attribute"
    MISSING_ATTRIBUTE = "missing_attribute"
    INVALID_JSON = "invalid_json"
    CONDITION_WITH_PARENTS = "condition_with_parents"
    INVALID_CONFIG = "invalid_config"
    IO_ERROR = "io_error"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    WORKER_CRASHED = "worker_crashed"
    INVALID_NAME = "invalid_name"
    RESULT_TOO_LARGE = "result_too_large"


@dataclass(frozen=True, slots=True)
class WorkflowError:
    """A problem found while loading a cluster, with where it was found."""

    kind: ErrorKind
    message: str
    cluster: str = ""
    workflow: str = ""
    job: str = ""
    file: str = ""
    line: int = 0

    def location(self) -> str:
        parts = []
        for label, value in (
            ("cluster", self.cluster),
            ("workflow", self.workflow),
            ("job", self.job),
        ):
            if value:
                parts.append(f"{label} {value}")
        if self.file:
            parts.append(f"{self.file}:{self.line}" if self.line else self.file)
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.location()
        return f"{self.kind}: {self.message}" + (f" ({where})" if where else "")


@dataclass(frozen=True, slots=True)
class CommandTemplate:
    """A job's command with the run's ``end_date`` cut out.

    The parser renders each command once with a marker in place of the run's
    end date and splits on it, so a command for any run is ``end_date`` joined
    between the segments: no user code runs per request.
    """

    segments: tuple[str, ...]

    def render(self, end_date: str) -> str:
        return end_date.join(self.segments)

    @property
    def uses_end_date(self) -> bool:
        return len(self.segments) > 1


@dataclass(frozen=True, slots=True)
class Schedule:
    """Pinball's grid: runs at ``reference_epoch + k * recurrence_seconds``, k >= 0 (UTC)."""

    reference_epoch: int
    recurrence_seconds: int
    overrun_policy: OverrunPolicy
    max_running_instances: int
    emails: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Job:
    """One job (or condition) of a workflow, as Pinball's template produced it."""

    name: str
    kind: JobKind
    template: str
    template_name: str
    parents: tuple[str, ...]
    children: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    command: CommandTemplate
    priority: float
    score: float
    token_priority: float
    max_attempts: int
    retry_delay_sec: int
    warn_timeout_sec: int | None
    abort_timeout_sec: int | None
    emails: tuple[str, ...]
    executor: str
    executor_config: tuple[tuple[str, str], ...]
    write_lock: str
    cleanup_template: str | None
    file: str
    line: int

    @property
    def is_condition(self) -> bool:
        return self.kind is JobKind.CONDITION


@dataclass(frozen=True, slots=True)
class Workflow:
    """A parsed workflow; ``jobs`` are sorted by name and include the final job."""

    cluster: str
    name: str
    jobs: tuple[Job, ...]
    final_job: str
    schedule: Schedule
    notify_emails: tuple[str, ...]
    file: str
    line: int

    def job(self, name: str) -> Job | None:
        for job in self.jobs:
            if job.name == name:
                return job
        return None


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file (or a listed directory) a parse read, for change detection."""

    path: str
    sha256: str


@dataclass(frozen=True, slots=True)
class ParseResult:
    """A cluster's parse: every workflow it built, the errors, and the files it read."""

    cluster: str
    workflows: tuple[Workflow, ...]
    errors: tuple[WorkflowError, ...]
    files: tuple[SourceFile, ...]
    duration_seconds: float

    def errors_for(self, workflow: str) -> tuple[WorkflowError, ...]:
        return tuple(error for error in self.errors if error.workflow == workflow)


# --- plain-data conversion (the sandbox's wire format) -----------------------


def to_plain(value: typing.Any) -> typing.Any:
    """Turn model values into JSON-compatible lists, dicts and scalars."""
    converter = _TO_PLAIN.get(type(value))
    if converter is None:
        converter = _TO_PLAIN[type(value)] = _plain_converter(type(value))
    return converter(value)


# One converter per type, chosen once: a parse converts hundreds of thousands of values.
_TO_PLAIN: dict[type, typing.Callable[[typing.Any], typing.Any]] = {}


def _plain_converter(cls: type) -> typing.Callable[[typing.Any], typing.Any]:
    if dataclasses.is_dataclass(cls):
        names = tuple(field.name for field in dataclasses.fields(cls))
        return lambda value: {name: to_plain(getattr(value, name)) for name in names}
    if issubclass(cls, enum.Enum):
        return lambda value: value.value
    if issubclass(cls, tuple | list):
        return lambda value: [to_plain(item) for item in value]
    return lambda value: value


def from_plain(cls: type, data: typing.Any, shared: dict | None = None) -> typing.Any:
    """Rebuild a model value of type ``cls`` from ``to_plain`` output, checking types.

    Equal strings, and equal tuples of strings, come back as one object, kept in
    ``shared`` (pass the same dict to share them across calls): a job's name recurs in its
    neighbours' parents, children, inputs and outputs, and a template or file name in
    every job, which would otherwise cost a copy per occurrence (28.5 against 9.8 KB per
    workflow in the benchmark corpus).
    """
    try:
        return _builder(cls)(data, {} if shared is None else shared)
    except (TypeError, ValueError, KeyError):
        # The slow path names where the data is wrong.
        return _build(cls, data, cls.__name__)


# What a compiled builder takes: the plain data, and the shared objects met so far in
# this from_plain call (strings and tuples of strings, which never compare equal).
_Builder = typing.Callable[[typing.Any, dict], typing.Any]
_BUILDERS: dict[typing.Any, _Builder] = {}


def _builder(tp: typing.Any) -> _Builder:
    """A checking constructor for type ``tp``, compiled once; ``_build`` is its reference."""
    found = _BUILDERS.get(tp)
    if found is None:
        found = _BUILDERS[tp] = _compile_builder(tp)
    return found


def _compile_builder(tp: typing.Any) -> _Builder:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        (inner_type,) = [o for o in typing.get_args(tp) if o is not type(None)]
        inner = _builder(inner_type)
        return lambda data, shared: None if data is None else inner(data, shared)
    if origin is tuple:
        args = typing.get_args(tp)
        of_strings = all(arg is str or arg is Ellipsis for arg in args)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _builder(args[0])

            def build_sequence(data, shared):
                if type(data) is not list:
                    raise TypeError
                built = tuple([item(value, shared) for value in data])
                return shared.setdefault(built, built) if of_strings else built

            return build_sequence
        items = [_builder(arg) for arg in args]

        def build_fixed(data, shared):
            if type(data) is not list or len(data) != len(items):
                raise TypeError
            built = tuple([build(value, shared)
                           for build, value in zip(items, data, strict=True)])
            return shared.setdefault(built, built) if of_strings else built

        return build_fixed
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        fields = [(f.name, _builder(hints[f.name])) for f in dataclasses.fields(tp)]
        names = {name for name, _ in fields}

        def build_dataclass(data, shared):
            if type(data) is not dict or data.keys() != names:
                raise TypeError
            return tp(*[build(data[name], shared) for name, build in fields])

        return build_dataclass
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return lambda data, shared: tp(data)
    if tp is float:
        def build_float(data, shared):
            if type(data) is float:
                return data
            if type(data) is int:
                return float(data)
            raise TypeError

        return build_float
    if tp is str:
        def build_string(data, shared):
            if type(data) is not str:
                raise TypeError
            return shared.setdefault(data, data)

        return build_string

    def build_exact(data, shared):
        if type(data) is not tp:
            raise TypeError
        return data

    return build_exact


_HINTS: dict[type, dict[str, typing.Any]] = {}


def _hints(cls: type) -> dict[str, typing.Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _build(tp: typing.Any, data: typing.Any, path: str) -> typing.Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if data is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _build(inner, data, path)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(data, list):
            raise TypeError(f"{path}: expected a list, got {type(data).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], item, f"{path}[{i}]") for i, item in enumerate(data))
        if len(args) != len(data):
            raise TypeError(f"{path}: expected {len(args)} items, got {len(data)}")
        return tuple(_build(arg, item, f"{path}[{i}]")
                     for i, (arg, item) in enumerate(zip(args, data, strict=True)))
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise TypeError(f"{path}: expected an object, got {type(data).__name__}")
        hints = _hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        if set(data) != set(names):
            raise TypeError(f"{path}: fields {sorted(data)} do not match {sorted(names)}")
        return tp(**{name: _build(hints[name], data[name], f"{path}.{name}") for name in names})
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(data)
    if tp is float and isinstance(data, int | float) and not isinstance(data, bool):
        return float(data)
    if tp in (int, str, bool) and type(data) is tp:
        return data
    raise TypeError(f"{path}: expected {getattr(tp, '__name__', tp)}, got {type(data).__name__}")
