"""Inert stand-ins for third-party modules a cluster names (``stub_modules``).

Job modules import database and cloud clients at their top (``import MySQLdb``,
``from boto.s3.connection import S3Connection``) that a parse never uses. A cluster
lists them, and inside its parse workers each listed module and every module under it
is an inert stub: any attribute is a class that can be subclassed, called and asked for
further attributes, and nothing does anything.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types


class _StubType(type):
    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return stub_class(f"{cls.__qualname__}.{name}", cls.__module__)


class _Stub(metaclass=_StubType):
    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs):
        return self

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return stub_class(name, type(self).__module__)()


def stub_class(qualname: str, module: str) -> type:
    return _StubType(qualname.rpartition(".")[2], (_Stub,),
                     {"__qualname__": qualname, "__module__": module})


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        value = stub_class(name, self.__name__)
        setattr(self, name, value)  # the same class each time, so subclass checks hold
        return value


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []  # a package: submodules are stubs too
        return module

    def exec_module(self, module) -> None:
        pass


class _StubFinder(importlib.abc.MetaPathFinder):
    def __init__(self, modules: tuple[str, ...]) -> None:
        self.modules = modules

    def find_spec(self, fullname, path=None, target=None):
        if any(fullname == name or fullname.startswith(name + ".") for name in self.modules):
            return importlib.machinery.ModuleSpec(fullname, _StubLoader(), is_package=True)
        return None


def install(modules: tuple[str, ...]) -> None:
    """Resolve each of ``modules`` (dotted names) and everything under it to stubs."""
    if modules:
        sys.meta_path.insert(0, _StubFinder(tuple(modules)))
