"""Turning exceptions raised by definition code into located WorkflowError values."""

from __future__ import annotations

import os
import traceback

from legacy_parser.commands import CommandFormatError
from legacy_parser.model import ErrorKind, WorkflowError


class DefinitionError(Exception):
    """A rule of the format is broken; carries the kind and the place."""

    def __init__(self, kind: ErrorKind, message: str, job: str = "", file: str = "",
                 line: int = 0) -> None:
        super().__init__(message)
        self.kind = kind
        self.job = job
        self.file = file
        self.line = line


class Locator:
    """Reports paths relative to the repo root, so errors and specs match across machines."""

    def __init__(self, repo_root: str) -> None:
        self.repo_root = os.path.realpath(repo_root)
        # A Locator lives for one parse; realpath costs an lstat per path component and
        # the same few files are asked about for every job.
        self._relative: dict[str, str] = {}
        self._real_folders: dict[str, str] = {}

    def relative(self, path: str) -> str:
        found = self._relative.get(path)
        if found is None:
            found = self._relative[path] = self._compute_relative(path)
        return found

    def _compute_relative(self, path: str) -> str:
        if not path:
            return ""
        if not os.path.isabs(path):
            return path  # a pseudo name such as "<frozen importlib._bootstrap>"
        real = self._realpath(path)
        if real == self.repo_root:
            return os.curdir
        if real.startswith(self.repo_root + os.sep):
            return real[len(self.repo_root) + len(os.sep):]
        return path

    def _realpath(self, path: str) -> str:
        """``os.path.realpath(path)``, resolving each folder once: the JSON format reads
        150,000 files in 20,000 folders at 10,000 workflows, and realpath costs an lstat
        per path component."""
        folder, name = os.path.split(path)
        if name in ("", os.curdir, os.pardir) or os.path.islink(path):
            return os.path.realpath(path)
        real_folder = self._real_folders.get(folder)
        if real_folder is None:
            real_folder = self._real_folders[folder] = os.path.realpath(folder)
        return os.path.join(real_folder, name)

    def in_repo(self, path: str) -> bool:
        # Code objects of real files have absolute names (the repo root on sys.path is);
        # relative ones are pseudo names that realpath would resolve against the cwd.
        if not os.path.isabs(path):
            return False
        relative = self.relative(path)
        return relative != path and relative != "."

    def innermost_repo_frame(self, error: BaseException) -> tuple[str, int]:
        """The deepest traceback frame in the repo: where the user's code went wrong."""
        if isinstance(error, SyntaxError) and error.filename:
            return self.relative(error.filename), error.lineno or 0
        found = ("", 0)
        for frame in traceback.extract_tb(error.__traceback__):
            if self.in_repo(frame.filename):
                found = (self.relative(frame.filename), frame.lineno or 0)
        return found

    def error_from_exception(self, error: BaseException, cluster: str, workflow: str = "",
                             job: str = "", at_import: bool = False) -> WorkflowError:
        if isinstance(error, DefinitionError):
            return WorkflowError(error.kind, str(error), cluster, workflow, error.job or job,
                                 self.relative(error.file), error.line)
        file, line = self.innermost_repo_frame(error)
        kind = _classify(error, at_import)
        message = f"{type(error).__name__}: {error}"
        if isinstance(error, SystemExit):
            message = f"definition code called sys.exit({error.code!r})"
        return WorkflowError(kind, message, cluster, workflow, job, file, line)


def _classify(error: BaseException, at_import: bool) -> ErrorKind:
    if isinstance(error, SyntaxError):
        return ErrorKind.SYNTAX_ERROR
    if isinstance(error, ImportError):
        return ErrorKind.IMPORT_ERROR
    if isinstance(error, MemoryError):
        return ErrorKind.MEMORY_LIMIT
    if isinstance(error, CommandFormatError):
        return ErrorKind.COMMAND_FORMAT
    return ErrorKind.EXCEPTION_AT_IMPORT if at_import else ErrorKind.TEMPLATE_ERROR
