"""Definitions of the exception_at_import example."""
