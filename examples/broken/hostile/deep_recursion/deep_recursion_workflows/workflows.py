"""Recurses without end at import: RecursionError."""


def walk(depth):
    return walk(depth + 1)


walk(0)

WORKFLOWS = {}
