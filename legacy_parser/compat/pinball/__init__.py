"""Shim of the Pinball names that workflow definitions import."""
