"""Stand-ins for ``pinball_ext.job.hive_jobs``."""

from pinball_ext.job.basic_jobs import ClusterJob


class HiveJobBase(ClusterJob):
    _UPLOAD_ARCHIVE = False


class HiveJob(HiveJobBase):
    _QUERY_TEMPLATE = None


class HiveFileJob(HiveJobBase):
    _QUERY_TEMPLATE_FILE = None
