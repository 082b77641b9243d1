"""Job classes run by the job runner; each prints what it would do."""
