"""Definitions of the syntax_error example."""
