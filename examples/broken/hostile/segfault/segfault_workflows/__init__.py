"""Hostile definitions: crashes the interpreter at import."""
