"""Parsing one cluster (a Pinball parser, its params and a repo root), inside a worker."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from legacy_parser import compat, loader, stubs
from legacy_parser.digests import file_digest
from legacy_parser.errors import Locator
from legacy_parser.jsonreader import read_json_workflows
from legacy_parser.model import ErrorKind, ParseResult, SourceFile, Workflow, WorkflowError
from legacy_parser.pyreader import read_python_workflows

PYTHON_PARSER = "pinball_ext.workflow.parser.PyWorkflowParser"
JSON_PARSER = "pinball.parser.repository_config_parser.RepositoryConfigParser"
PARSERS = (PYTHON_PARSER, JSON_PARSER)


def parse_here(cluster: str, repo_root: str, parser: str, parser_params: dict[str, Any],
               default_email: str = "", python2: bool = True,
               stub_modules: tuple[str, ...] = (),
               emit: Callable[[Workflow], None] | None = None) -> ParseResult:
    """Parse every workflow of the cluster in this process. Imports user code: call only
    inside a sandbox worker. Modules are compiled from source at every parse (see
    ``legacy_parser.loader``). ``python2`` translates Python 2 modules; ``stub_modules``
    stand in as inert stubs (``legacy_parser.stubs``).

    ``emit``, if given, gets each workflow as soon as it is built (in the order of the
    definitions), and the result holds none: the worker writes a workflow while it
    builds the next one, so the server rebuilds it meanwhile.
    """
    started = time.monotonic()
    repo_root = os.path.realpath(repo_root)
    locator = Locator(repo_root)
    # Before anything under the repo or the shims is imported: they load from source only.
    loader.install(repo_root, compat.SHIM_ROOT, python2)
    sys.dont_write_bytecode = True
    compat.install(repo_root)
    stubs.install(tuple(stub_modules))  # first on sys.meta_path: a named stub always wins
    if default_email:
        from pinball.config.pinball_config import PinballConfig

        PinballConfig.DEFAULT_EMAIL = default_email
    sys.path.insert(0, repo_root)
    files: list[SourceFile] = []
    workflows: list[Workflow] = []
    emit = emit or workflows.append
    if parser == PYTHON_PARSER:
        errors = read_python_workflows(cluster, parser_params, locator, emit)
    elif parser == JSON_PARSER:
        errors, files = read_json_workflows(cluster, repo_root, parser_params, locator, emit)
    else:
        errors = [WorkflowError(
            ErrorKind.INVALID_CONFIG,
            f"unknown parser {parser!r}; expected one of {', '.join(PARSERS)}", cluster)]
    files.extend(_python_files_read(locator, errors))
    return ParseResult(
        cluster=cluster,
        workflows=tuple(sorted(workflows, key=lambda workflow: workflow.name)),
        errors=tuple(errors),
        files=tuple(sorted(set(files), key=lambda source: source.path)),
        duration_seconds=time.monotonic() - started,
    )


def _python_files_read(locator: Locator, errors: list[WorkflowError]) -> list[SourceFile]:
    """Repo modules imported, plus files named by errors (a syntax error's file is never
    imported, but fixing it must trigger a re-parse)."""
    paths = {
        module.__file__ for module in list(sys.modules.values())
        if getattr(module, "__file__", None) and locator.in_repo(module.__file__)
    }
    paths.update(os.path.join(locator.repo_root, error.file) for error in errors
                 if error.file and not os.path.isabs(error.file))
    found = []
    for path in sorted(paths):
        try:
            found.append(SourceFile(locator.relative(path), file_digest(path)))
        except OSError:
            continue  # vanished since: the catalog's next poll sees it missing
    return found
