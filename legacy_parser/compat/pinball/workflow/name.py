class Name:
    """Token name constants definitions refer to."""

    DELIMITER = "/"
    WORKFLOW_PREFIX = "/workflow/"
    WAITING_STATE = "waiting"
    RUNNABLE_STATE = "runnable"
    WORKFLOW_START_INPUT = "__WORKFLOW_START__"
    SCHEDULE_PREFIX = "/schedule/"
    WORKFLOW_SCHEDULE_PREFIX = "/schedule/workflow/"
