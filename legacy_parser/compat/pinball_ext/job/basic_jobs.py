"""Stand-ins for ``pinball_ext.job.basic_jobs``: subclassable, and they run nothing."""


class JobBase:
    _CLEANUP_AFTER_FAILURE = False
    _SKIP_IF_SUCCEEDED = False

    def __init__(self, params=None, settings=None):
        self.params = params if params else {}
        self.settings = settings if settings else {}
        job_name = self.params.get("job_name")
        self.job_name = job_name if job_name is not None else type(self).__name__
        self.delay_execution = 0
        self.job_output_dirs = []
        self._job_output = None
        self._job_stderr = None

    def runjob(self, dry_run=False):
        raise NotImplementedError("jobs do not run in a parse")

    def _setup(self):
        pass

    def _execute(self):
        pass

    def _complete(self):
        pass

    def _cleanup(self):
        pass

    def __str__(self):
        return f"({self.job_name}): ({self.params})"


class PythonJob(JobBase):
    pass


class CommandLineJob(JobBase):
    def _get_command(self):
        raise NotImplementedError("jobs do not run in a parse")


class ClusterJob(JobBase):
    def __init__(self, params, settings=None):
        super().__init__(params, settings=settings)
