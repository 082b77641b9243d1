"""WorkflowConfig, JobConfig and ScheduleConfig: records of what a definition says.

Each records where it was constructed so errors and specs can name the file and line.
"""

from legacy_parser.compat import definition_site


class WorkflowConfig:
    def __init__(self, jobs, final_job_config, schedule, notify_emails=None):
        self.jobs = jobs
        self.final_job_config = final_job_config
        self.schedule = schedule
        self.notify_emails = notify_emails
        self.definition_site = definition_site()


class JobConfig:
    def __init__(self, template, dependency=None):
        self.template = template
        self.dependency = dependency
        self.definition_site = definition_site()


class ScheduleConfig:
    def __init__(self, recurrence, reference_timestamp, overrun_policy=None,
                 max_running_instances=None):
        self.recurrence = recurrence
        self.reference_timestamp = reference_timestamp
        self.overrun_policy = overrun_policy
        self.max_running_instances = max_running_instances
        self.definition_site = definition_site()
