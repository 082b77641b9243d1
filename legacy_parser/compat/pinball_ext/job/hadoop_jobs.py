"""Stand-in for ``pinball_ext.job.hadoop_jobs``."""

from pinball_ext.job.basic_jobs import ClusterJob


class HadoopJob(ClusterJob):
    def __init__(self, params, settings=None):
        super().__init__(params, settings)
        self.jobconf_args = {}
        self.extra_arguments = []
        self.extra_jars = []
