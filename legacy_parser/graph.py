"""Graph rules shared by both formats: edges, leaves, cycles and priority scores."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class GraphError(Exception):
    """A dependency problem; ``job`` names the job it was found at."""

    def __init__(self, kind: str, message: str, job: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.job = job


def children_of(parents: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Each job's children, in the order Pinball appends them (by job, then by parent)."""
    children: dict[str, list[str]] = {name: [] for name in parents}
    for child, child_parents in parents.items():
        for parent in child_parents:
            if parent not in children:
                raise GraphError(
                    "missing_parent",
                    f"job {child!r} depends on {parent!r}, which is not a job of this workflow",
                    child,
                )
            children[parent].append(child)
    return children


def leaves(children: Mapping[str, list[str]]) -> list[str]:
    return [name for name, kids in children.items() if not kids]


def find_cycle(children: Mapping[str, list[str]]) -> list[str] | None:
    """A cycle anywhere in the graph as ``[a, b, ..., a]``, or None.

    Pinball only searched from the final job, missing cycles that reach no leaf;
    this walks from every job.
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in children:
        if start in state:
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                path.append(node)
            kids = children[node]
            if index < len(kids):
                stack.append((node, index + 1))
                kid = kids[index]
                if state.get(kid) == 1:
                    return path[path.index(kid):] + [kid]
                if kid not in state:
                    stack.append((kid, 0))
            else:
                state[node] = 2
                path.pop()
    return None


def scores(children: Mapping[str, list[str]], priorities: Mapping[str, float]) -> dict[str, float]:
    """Each job's priority plus those of every job depending on it, each counted once."""
    dependents: dict[str, frozenset[str]] = {}

    def dependents_of(name: str) -> frozenset[str]:
        # Iterative post-order: graphs can be deeper than Python's recursion limit.
        stack = [name]
        while stack:
            node = stack[-1]
            pending = [kid for kid in children[node] if kid not in dependents]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            if node not in dependents:
                below = {node}
                for kid in children[node]:
                    below |= dependents[kid]
                dependents[node] = frozenset(below)
        return dependents[name]

    return {name: sum(priorities[d] for d in sorted(dependents_of(name))) for name in children}
