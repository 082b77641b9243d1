"""A small stand-in for the job runner of an installed Pinball.

Only pinball_ext.job.job_runner is here, so that the example commands run on a
machine without Pinball. It is not the token fetcher's import shim: workflow
definitions never import it.
"""
