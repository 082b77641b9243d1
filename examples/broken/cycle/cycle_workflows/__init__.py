"""Definitions of the cycle example."""
