"""Definitions of the import_error example."""
