"""How a parse loads definition modules: always from source, Python 2 translated.

No parse may read bytecode that any parse could have written (a definition could leave
poisoned ``.pyc`` files for another cluster's modules or for the shims). So the repo's
modules and the shims are loaded through a path hook whose loader compiles every module
from its source and never reads or writes bytecode; the repo's stray ``.pyc`` files and
extension modules are not loadable at all.

Pinball only ran on Python 2, so definition repos are Python 2 code. With ``python2``
on, a repo module that does not compile as Python 3, or whose code uses names only
Python 2 has (``iteritems``, ``basestring``, ``unicode``, an implicit relative import of
a sibling module ...), is translated with fissix (a maintained fork of lib2to3, with
all of its default fixers) and loaded from the translation. The translation is
deterministic (same source and folder, same result) and, like bytecode, never cached
where a parse could write: it is made again by each parse that needs it. Line numbers of
the translation are mapped back to the original file's, so tracebacks, definition sites
and errors name the line the user wrote.
"""

from __future__ import annotations

import ast
import dis
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Iterator

# What a module that compiles as Python 3 may still use only because it is Python 2 code:
# builtins Python 3 lacks, and methods of Python 2's dict.
PYTHON2_BUILTINS = frozenset({
    "basestring", "unicode", "unichr", "long", "xrange", "raw_input", "execfile", "reduce",
    "intern", "apply", "buffer", "StandardError",
})
PYTHON2_METHODS = frozenset({
    "iteritems", "iterkeys", "itervalues", "viewitems", "viewkeys", "viewvalues", "has_key",
})

class Python2TranslationError(SyntaxError):
    """The Python 3 translation of a Python 2 module does not compile."""


class SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles from source at every import; bytecode is neither read nor written."""

    python2 = False

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        return compile_module(self.get_data(path), path, self.python2)

    def set_data(self, path, data, *, _mode=0o666) -> None:
        return  # never write bytecode (get_code does not ask for it; this makes it sure)


class RepoLoader(SourceOnlyLoader):
    python2 = True


# What every source loader compiles a module with (accepts source or a syntax tree).
_source_to_code = importlib.abc.InspectLoader.source_to_code


def compile_module(source: bytes, path: str, python2: bool) -> types.CodeType:
    """The module's code; with ``python2``, from its translation when it is Python 2."""
    try:
        code = _source_to_code(source, path)
    except SyntaxError:
        if not python2:
            raise
        translated = _translate_or_none(source, path)
        if translated is None:
            raise  # not Python 2 either: the Python 3 error names the original line
        return _compile_translation(*translated, path)
    if python2 and _uses_python2_names(code, path):
        translated = _translate_or_none(source, path)
        if translated is not None:
            return _compile_translation(*translated, path)
    return code


def translate_python2(source: str, path: str) -> tuple[str, dict[int, int]]:
    """Python 3 text for Python 2 ``source``, and each translated line's original line.

    ``path`` is the module's file: the implicit-relative-import fixer looks beside it.
    Raises fissix's ParseError when ``source`` is not Python 2 either.
    """
    if not source.endswith("\n"):
        source += "\n"  # the lib2to3 grammar needs a final newline
    tree = _refactoring_tool().refactor_string(source, path)
    return str(tree), _line_map(tree)


@functools.cache
def _refactoring_tool():
    from fissix.pgen2 import driver, pgen

    # fissix would load its grammar tables from pickles in a per-user cache folder, where
    # any parse could leave one for the next: build them from the packaged grammar text
    # instead (about 40 ms, once per worker). Before fissix.refactor loads the grammar.
    driver.load_grammar = lambda grammar_file, *args, **kwargs: pgen.generate_grammar(
        grammar_file)
    from fissix import refactor

    return refactor.RefactoringTool(refactor.get_fixers_from_package("fissix.fixes"))


def _line_map(tree) -> dict[int, int]:
    """Translated line -> original line. Leaves the fixers kept carry their original line;
    lines that hold only new text belong to the original line before them."""
    mapping: dict[int, int] = {}
    line = 1
    for leaf in tree.leaves():
        line += leaf.prefix.count("\n")
        if leaf.lineno:
            for offset in range(leaf.value.count("\n") + 1):
                mapping.setdefault(line + offset, leaf.lineno + offset)
        line += leaf.value.count("\n")
    last = 1
    for number in range(1, line + 1):
        last = mapping.setdefault(number, last)
    return mapping


def _translate_or_none(source: bytes, path: str) -> tuple[str, dict[int, int]] | None:
    from fissix.pgen2.parse import ParseError
    from fissix.pgen2.tokenize import TokenError

    try:
        text = importlib.util.decode_source(source)
        return translate_python2(text, path)
    except (ParseError, TokenError, IndentationError, UnicodeDecodeError, SyntaxError):
        return None


def _compile_translation(text: str, mapping: dict[int, int], path: str) -> types.CodeType:
    last = max(mapping)
    try:
        if all(line == original for line, original in mapping.items()):
            return _source_to_code(text, path)  # the usual case: no fixer moved a line
        tree = ast.parse(text, path)
    except SyntaxError as error:
        raise Python2TranslationError(
            f"{error.msg} (in the Python 3 translation of this Python 2 module)",
            (path, mapping.get(error.lineno or 1, last), error.offset, error.text),
        ) from None
    for node in ast.walk(tree):
        if "lineno" in node._attributes:
            node.lineno = mapping.get(node.lineno, last)
            node.end_lineno = mapping.get(node.end_lineno or node.lineno, last)
    return _source_to_code(tree, path)


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _code_objects(constant)


def _uses_python2_names(code: types.CodeType, path: str) -> bool:
    """Whether the code loads a Python 2 builtin, calls a Python 2 dict method, or
    imports a sibling module without a dot."""
    codes = list(_code_objects(code))
    siblings = _sibling_modules(path)
    wanted = PYTHON2_BUILTINS | PYTHON2_METHODS | siblings
    if not any(wanted.intersection(each.co_names) for each in codes):
        return False  # the common case, without disassembling
    for each in codes:
        instructions = list(dis.get_instructions(each))
        for index, instruction in enumerate(instructions):
            name, operation = instruction.argval, instruction.opname
            if (operation in ("LOAD_GLOBAL", "LOAD_NAME") and name in PYTHON2_BUILTINS
                    or operation in ("LOAD_ATTR", "LOAD_METHOD") and name in PYTHON2_METHODS
                    or operation == "IMPORT_NAME" and name.partition(".")[0] in siblings
                    and instructions[index - 2].argval == 0):
                return True
    return False


def _sibling_modules(path: str) -> set[str]:
    """Modules beside ``path`` in its package: Python 2 imported them without a dot."""
    folder = os.path.dirname(path)
    if not os.path.isfile(os.path.join(folder, "__init__.py")):
        return set()
    try:
        entries = os.listdir(folder)
    except OSError:
        return set()
    own = os.path.splitext(os.path.basename(path))[0]
    found = {name[:-3] for name in entries if name.endswith(".py")}
    found |= {name for name in entries
              if os.path.isfile(os.path.join(folder, name, "__init__.py"))}
    return found - {own, "__init__"}


def install(repo_root: str, shim_root: str, python2: bool) -> None:
    """Load modules under ``repo_root`` (translated when ``python2``) and ``shim_root``
    from source only. Call before anything under them is imported."""
    roots = ((os.path.realpath(repo_root), RepoLoader if python2 else SourceOnlyLoader),
             (os.path.realpath(shim_root), SourceOnlyLoader))

    def hook(entry: str) -> importlib.machinery.FileFinder:
        real = os.path.realpath(entry or os.getcwd())
        for root, loader in roots:
            if real == root or real.startswith(root + os.sep):
                return importlib.machinery.FileFinder(
                    entry, (loader, importlib.machinery.SOURCE_SUFFIXES))
        raise ImportError(f"not a definition folder: {entry}")

    sys.path_hooks.insert(0, hook)
    sys.path_importer_cache.clear()

