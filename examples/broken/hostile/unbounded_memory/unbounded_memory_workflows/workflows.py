"""Allocates memory at import until something stops it (1 MiB a step, touched)."""

HOARD = []
while True:
    HOARD.append(b'x' * (1 << 20))

WORKFLOWS = {}
