"""Shim of the pinball_ext names that workflow definitions import."""
