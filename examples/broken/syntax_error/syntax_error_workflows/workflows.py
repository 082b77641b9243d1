"""The team's workflows: the daily ones live in their own module."""

from syntax_error_workflows.daily import WORKFLOWS
