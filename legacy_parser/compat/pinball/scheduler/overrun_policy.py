class OverrunPolicy:
    """What to do when a run is due while an earlier one is still running."""

    SKIP, ABORT_RUNNING, DELAY, DELAY_UNTIL_SUCCESS, START_NEW = range(5)

    _NAMES = {
        SKIP: "SKIP",
        ABORT_RUNNING: "ABORT_RUNNING",
        DELAY: "DELAY",
        DELAY_UNTIL_SUCCESS: "DELAY_UNTIL_SUCCESS",
        START_NEW: "START_NEW",
    }

    @staticmethod
    def to_string(policy):
        return OverrunPolicy._NAMES[policy]

    @staticmethod
    def from_string(policy_name):
        for policy, name in OverrunPolicy._NAMES.items():
            if name == policy_name:
                return policy
        raise ValueError(
            f"unknown overrun policy {policy_name!r}; expected one of "
            + ", ".join(OverrunPolicy._NAMES.values())
        )
