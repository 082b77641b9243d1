"""Definitions of the invalid_recurrence example."""
