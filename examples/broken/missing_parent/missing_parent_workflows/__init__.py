"""Definitions of the missing_parent example."""
