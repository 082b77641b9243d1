"""The base class of the example jobs."""


class ExampleJob(object):
    """A job that prints what it does and succeeds.

    params are the runner's --job_params as a dict of strings.
    """

    ACTION = 'does nothing'

    def __init__(self, params):
        self.params = params

    def run(self):
        print('%s: %s for %s (env=%s)' % (
            type(self).__name__, self.ACTION,
            self.params.get('end_date', '?'), self.params.get('env', '-')))
        return 0
