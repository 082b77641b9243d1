"""Definitions of the unknown_overrun_policy example."""
