"""Hostile definitions: recurses without end at import."""
