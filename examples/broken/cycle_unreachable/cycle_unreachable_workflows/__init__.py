"""Definitions of the cycle_unreachable example."""
