class PinballConfig:
    """The configuration constants definitions read at import time."""

    DEFAULT_EMAIL = None
    DEFAULT_MAX_WORKFLOW_RUNNING_INSTANCES = 3
