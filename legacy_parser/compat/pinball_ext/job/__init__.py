"""Inert stand-ins for Pinball's job classes (``pinball_ext.job.*``).

Job modules subclass them and workflow definitions import names (``FINAL_JOB``, import
dirs) from those modules, so they must load; a parse never runs a job, so nothing here
does any work.
"""
