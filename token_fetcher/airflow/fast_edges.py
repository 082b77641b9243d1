"""Dependencies between the tasks of one DAG, set without hashing the DAG per task.

``task.set_upstream(parents)`` goes through Airflow's ``DAGNode._set_relatives``, which
collects the DAGs of the tasks given into a set: it hashes the DAG once per task, and a
DAG's hash covers the ids of all its tasks. For tasks that are already in one DAG, with
no edge modifier, what it changes is only each task's set of upstream or downstream
ids; adding the ids directly is a tenth of a parse of thousands of DAGs. The direct path
is taken only where Airflow's method is the one it was written against (Airflow 3.3,
checked by the names its code uses) and the task classes override none of it; anything
else goes through Airflow. The ``[token_fetcher] fast_edges`` setting (True) turns the
direct path off outright.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from token_fetcher.airflow.settings import conf_flag

__all__ = ["set_upstream"]

# The names Airflow 3.3's DAGNode._set_relatives uses: the method the direct path mirrors.
# A set: Python 3.12 compiles its set comprehension inline, which orders them otherwise.
_SET_RELATIVES_NAMES = frozenset({
    "airflow.sdk.bases.operator", "BaseOperator", "airflow.sdk.definitions.mappedoperator",
    "MappedOperator", "isinstance", "Sequence", "update_relative", "leaves", "roots",
    "TypeError", "__class__", "__name__", "append", "len", "RuntimeError", "pop",
    "ValueError", "has_dag", "dag", "add_task", "downstream_task_ids", "add", "node_id",
    "upstream_task_ids", "add_edge_info",
})


def _defined_by(name: str) -> Any:
    """What ``BaseOperator`` gets as ``name`` from its bases, as defined (not bound), or
    None. Found along the MRO: Airflow's classes that define them are not public."""
    return next((vars(klass)[name] for klass in BaseOperator.__mro__ if name in vars(klass)),
                None)


@functools.cache
def direct_path_valid(cls: type) -> bool:
    """Whether ``set_upstream`` of tasks of class ``cls`` is Airflow 3.3's, unchanged, and
    ``[token_fetcher] fast_edges`` is not false (read once per class)."""
    relatives, update_relative = _defined_by("_set_relatives"), _defined_by("update_relative")
    return (
        conf_flag("fast_edges", default=True)
        and issubclass(cls, BaseOperator)
        and getattr(relatives, "__code__", None) is not None
        and frozenset(relatives.__code__.co_names) == _SET_RELATIVES_NAMES
        # An operator's update_relative does nothing (it is for task groups and XComArgs).
        and getattr(update_relative, "__code__", None) is not None
        and update_relative.__code__.co_names == ()
        and cls._set_relatives is relatives
        and cls.set_upstream is _defined_by("set_upstream")
        and cls.update_relative is update_relative
        and all(getattr(cls, name) is getattr(BaseOperator, name)
                for name in ("roots", "leaves", "get_dag", "node_id"))
    )


def set_upstream(task: Any, parents: Sequence[Any]) -> None:
    """``task.set_upstream(parents)``, for a task and parents already in the same DAG."""
    direct = all(direct_path_valid(type(each)) for each in (task, *parents))
    dag = task.get_dag() if direct else None
    if dag is None or any(parent.get_dag() is not dag for parent in parents):
        task.set_upstream(list(parents))
        return
    upstream = task.upstream_task_ids
    for parent in parents:
        parent.downstream_task_ids.add(task.node_id)
        upstream.add(parent.node_id)
