"""Hostile definitions: calls sys.exit at import."""
