"""A failure notifier that many tasks and DAGs can share (needs the SMTP provider)."""

from __future__ import annotations

import copy
from typing import Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier

__all__ = ["SharedSmtpNotifier"]


class SharedSmtpNotifier(SmtpNotifier):
    """An ``SmtpNotifier`` that is safe to share between tasks and DAGs.

    A notifier renders its template fields, and fills in its default subject and body,
    *in place* when it sends. One instance serving several tasks would send a second
    failure with the first one's rendered text whenever both notify from the same process
    (the DAG processor runs the failure callbacks of many DAGs of one file). Each
    notification is therefore sent by a shallow copy; the shared instance stays as built.
    """

    def __call__(self, *args: Any) -> None:
        return SmtpNotifier.__call__(copy.copy(self), *args)
