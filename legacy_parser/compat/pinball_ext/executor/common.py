class Platform:
    """Executor names a JobTemplate may be given."""

    EMR = "emr"
    LOCAL = "local"
    QUBOLE = "qubole"
