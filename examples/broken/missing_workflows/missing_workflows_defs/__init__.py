"""Definitions of the missing_workflows example."""
