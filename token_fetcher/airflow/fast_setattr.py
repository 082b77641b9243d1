"""A faster ``BaseOperator.__setattr__`` for tasks under construction.

``BaseOperator.__init__`` sets some 60 attributes per task through Airflow's hook, which
looks up a converter by name and calls ``super()`` for each: about a third of the time
Airflow takes to build a task, and so of a parse of thousands of tasks. The fast path
reads Airflow's name-mangled private attributes (``_BaseOperator__init_kwargs``, ...),
so it checks the hook it stands in for, and turns itself off for any other; the
``[token_fetcher] fast_task_setattr`` setting (True) turns it off outright.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from token_fetcher.airflow.settings import conf_flag

__all__ = ["FastTaskSetattr", "set_own_attributes"]


def set_own_attributes(task: Any, **values: Any) -> None:
    """Set attributes of our own on a task being built, past ``BaseOperator.__setattr__``.

    That hook converts Airflow's own arguments (``retries``, ``retry_delay``, ...), keeps
    the recorded init arguments in step and re-resolves XComArg dependencies of template
    fields set after ``__init__``. None of it applies here: these names have no
    converter, the init arguments are recorded after ``__init__`` returns, and the task
    is not instantiated yet. The hook's name lookups cost about 1 us per attribute,
    for every attribute of every task of every parse.
    """
    for name, value in values.items():
        object.__setattr__(task, name, value)


# BaseOperator.__setattr__ as the fast path below was written against (Airflow 3.3):
#
#     if converter := getattr(self, f"_convert_{key}", None):
#         value = converter(value)
#     super().__setattr__(key, value)
#     if self.__from_mapped or self._lock_for_execution:
#         return
#     if key in self.__init_kwargs:
#         self.__init_kwargs[key] = value
#     if self.__instantiated and key in self.template_fields:
#         self._set_xcomargs_dependency(key, value)
_SETATTR_NAMES = (
    "getattr",
    "super",
    "__setattr__",
    "_BaseOperator__from_mapped",
    "_lock_for_execution",
    "_BaseOperator__init_kwargs",
    "_BaseOperator__instantiated",
    "template_fields",
    "_set_xcomargs_dependency",
)
_CONVERTER_PREFIX = "_convert_"
# Per task class: the attribute names the fast path leaves to Airflow's hook, or None
# for no fast path.
_converted_names: dict[type, frozenset[str] | None] = {}


def _converted(cls: type) -> frozenset[str] | None:
    """The attribute names of ``cls`` that need more than a store in the instance
    dict (Airflow converts them, or a property or other data descriptor sets them), when
    the fast path of ``FastTaskSetattr.__setattr__`` is valid for ``cls``; else None.

    Valid when Airflow's hook is the one above (same names and constants: a changed hook
    turns the fast path off, never wrong), no other class in ``cls``'s MRO defines
    ``__setattr__``, and ``[token_fetcher] fast_task_setattr`` is not false.
    """
    try:
        return _converted_names[cls]
    except KeyError:
        pass
    result: frozenset[str] | None = None
    if not conf_flag("fast_task_setattr", default=True):  # read once per class
        _converted_names[cls] = result
        return result
    hook = BaseOperator.__dict__.get("__setattr__")
    code = getattr(hook, "__code__", None)
    hooks = [
        klass
        for klass in cls.__mro__
        if "__setattr__" in klass.__dict__ and klass is not FastTaskSetattr
    ]
    if (
        code is not None
        and code.co_names == _SETATTR_NAMES
        and _CONVERTER_PREFIX in code.co_consts
        and hooks == [BaseOperator, object]
        and all(
            name in BaseOperator.__dict__
            for name in ("_BaseOperator__instantiated", "_BaseOperator__from_mapped")
        )
        and BaseOperator.__dict__.get("_lock_for_execution") is False
    ):
        prefix = len(_CONVERTER_PREFIX)
        converted = {name[prefix:] for name in dir(cls) if name.startswith(_CONVERTER_PREFIX)}
        descriptors = {
            name
            for klass in cls.__mro__
            for name, attribute in vars(klass).items()
            if hasattr(type(attribute), "__set__") or hasattr(type(attribute), "__delete__")
        }
        result = frozenset(converted | descriptors)
    _converted_names[cls] = result
    return result


class FastTaskSetattr:
    """Mixed into an operator before ``BaseOperator``: its ``__setattr__``."""

    def __setattr__(self, key: str, value: Any) -> None:
        """``BaseOperator.__setattr__``, faster for a task under construction.

        ``BaseOperator.__init__`` sets some 60 attributes per task through Airflow's
        hook, which looks up a converter by name and calls ``super()`` for each: about a
        third of the time Airflow takes to build a task, and so of a parse of thousands
        of tasks. While a task is being built (not instantiated, not mapped, not locked
        for execution), an attribute without a converter only needs what the hook does
        then: set it, and keep the recorded init argument of that name in step. Every
        other case, and any Airflow whose hook is not the one ``_converted`` checks for,
        goes through Airflow's hook.
        """
        state = self.__dict__
        init_kwargs = state.get("_BaseOperator__init_kwargs")
        try:
            converted = _converted_names[type(self)]
        except KeyError:
            converted = _converted(type(self))
        if (
            converted is None
            or init_kwargs is None
            or key in converted
            or state.get("_BaseOperator__instantiated")
            or state.get("_BaseOperator__from_mapped")
            or state.get("_lock_for_execution")
        ):
            super().__setattr__(key, value)
            return
        state[key] = value  # neither converted nor a data descriptor: see _converted
        if key in init_kwargs:
            init_kwargs[key] = value
