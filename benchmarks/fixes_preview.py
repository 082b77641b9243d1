"""benchmarks.stages with the proposed fixes F1-F4 patched in, to preview their effect.

    python -m benchmarks.fixes_preview CORPUS_DIR [none|all|F1,F2,...]

Monkeypatches, in this process only, what benchmarks/ANALYSIS.md proposes for
legacy_parser (F1 compat.is_shim_file memo, F2 Locator.relative/in_repo memo, F3 a
type-dispatching to_plain, F4 from_plain compiled per type with the old function as
the error path), then runs the same stages as ``python -m benchmarks.stages``. Nothing
in the project is changed. Compare ``none`` with ``all``.
"""

import dataclasses
import enum
import functools
import runpy
import sys
import types
import typing

import legacy_parser.compat as compat
import legacy_parser.errors as errors
import legacy_parser.model as model

which = set(sys.argv[2].split(",")) if len(sys.argv) > 2 else {"all"}


def on(key: str) -> bool:
    return "all" in which or key in which


if on("F1"):  # compat: memoize is_shim_file by file name
    compat.is_shim_file = functools.lru_cache(maxsize=None)(compat.is_shim_file)

if on("F2"):  # errors.Locator: memoize relative() and in_repo() per path
    _rel, _inr = errors.Locator.relative, errors.Locator.in_repo
    def relative(self, path):
        cache = self.__dict__.setdefault("_rel_cache", {})
        found = cache.get(path)
        if found is None:
            found = cache[path] = _rel(self, path)
        return found
    def in_repo(self, path):
        cache = self.__dict__.setdefault("_inr_cache", {})
        found = cache.get(path)
        if found is None:
            found = cache[path] = _inr(self, path)
        return found
    errors.Locator.relative, errors.Locator.in_repo = relative, in_repo

if on("F3"):  # model.to_plain: per-class field names, type dispatch
    _names = {}
    def to_plain(value):
        cls = type(value)
        names = _names.get(cls)
        if names is None:
            names = _names[cls] = tuple(f.name for f in dataclasses.fields(value)) \
                if dataclasses.is_dataclass(value) and not isinstance(value, type) else ()
        if names:
            return {n: to_plain(getattr(value, n)) for n in names}
        if cls is str or cls is int or cls is float or cls is bool or value is None:
            return value
        if isinstance(value, enum.Enum):
            return value.value
        if cls is tuple or cls is list:
            return [to_plain(v) for v in value]
        return value
    model.to_plain = to_plain

if on("F4"):  # model.from_plain: a builder compiled once per type; slow path for errors
    _slow = model.from_plain
    _builders = {}
    class _Bad(Exception):
        pass
    def _compile(tp):
        if tp in _builders:
            return _builders[tp]
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            (inner,) = [o for o in typing.get_args(tp) if o is not type(None)]
            ib = _compile(inner)
            def b(d, ib=ib):
                return None if d is None else ib(d)
        elif origin is tuple:
            args = typing.get_args(tp)
            if len(args) == 2 and args[1] is Ellipsis:
                ib = _compile(args[0])
                def b(d, ib=ib):
                    if type(d) is not list:
                        raise _Bad
                    return tuple([ib(x) for x in d])
            else:
                ibs = [_compile(a) for a in args]
                def b(d, ibs=ibs):
                    if type(d) is not list or len(d) != len(ibs):
                        raise _Bad
                    return tuple([f(x) for f, x in zip(ibs, d, strict=True)])
        elif dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            names = [f.name for f in dataclasses.fields(tp)]
            keys = set(names)
            pairs = [(n, _compile(hints[n])) for n in names]
            def b(d, pairs=pairs, keys=keys, tp=tp):
                if type(d) is not dict or d.keys() != keys:
                    raise _Bad
                return tp(*[f(d[n]) for n, f in pairs])
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            b = tp
        elif tp is float:
            def b(d):
                if type(d) is float:
                    return d
                if type(d) is int:
                    return float(d)
                raise _Bad
        elif tp in (int, str, bool):
            def b(d, tp=tp):
                if type(d) is not tp:
                    raise _Bad
                return d
        else:
            raise TypeError(tp)
        _builders[tp] = b
        return b
    def from_plain(cls, data):
        try:
            return _compile(cls)(data)
        except Exception:
            return _slow(cls, data)  # the exact error message, as before
    model.from_plain = from_plain

sys.argv = ["benchmarks.stages", sys.argv[1]]
runpy.run_module("benchmarks.stages", run_name="__main__", alter_sys=True)
