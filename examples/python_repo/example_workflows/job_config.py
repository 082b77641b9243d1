"""Where the job runner looks for job classes (directories, relative to the repo root)."""

JOB_IMPORT_DIRS = [
    'example_jobs',
]
