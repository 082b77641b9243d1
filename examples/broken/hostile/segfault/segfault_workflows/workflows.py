"""Crashes the interpreter (SIGSEGV) at import by reading address 0."""

import ctypes

ctypes.string_at(0)

WORKFLOWS = {}
