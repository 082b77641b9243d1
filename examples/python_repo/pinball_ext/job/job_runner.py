"""Runs one job class, the way a Pinball job command line asks for it.

    python -m pinball_ext.job.job_runner --job_import_dirs_config=pkg.mod.DIRS \
        --job_class_name=SomeJob --job_params="env=example,end_date=2015-01-31" \
        [--executor=emr] [--executor_config="k=v,k=v"] [--write_lock=lock]

Run it from the job repo root. The job class is looked up by name in the
modules of the directories listed by --job_import_dirs_config. Executors are
not contacted: the job runs here and the executor is only reported. When the
environment variable EXAMPLE_JOB_LOG names a file, one line
"<job_class_name> <job_params>" is appended to it per run. The exit status is
the job's.
"""

import argparse
import importlib
import os
import sys


def parse_pairs(text):
    """'k=v,k=v' -> dict; an empty text gives an empty dict."""
    pairs = {}
    for item in (text or '').split(','):
        if not item.strip():
            continue
        key, sep, value = item.partition('=')
        if not sep:
            raise SystemExit(f'job_runner: expected key=value, got {item!r}')
        pairs[key.strip()] = value.strip()
    return pairs


def load_object(dotted_name):
    module_name, _, attribute = dotted_name.rpartition('.')
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise SystemExit(f'job_runner: cannot load {dotted_name}: {error}') from None


def find_job_class(import_dirs, class_name):
    for directory in import_dirs:
        package = directory.strip('/').replace('/', '.')
        for filename in sorted(os.listdir(directory)):
            if not filename.endswith('.py') or filename == '__init__.py':
                continue
            module = importlib.import_module(f'{package}.{filename[:-3]}')
            job_class = getattr(module, class_name, None)
            if isinstance(job_class, type):
                return job_class
    raise SystemExit(f'job_runner: no job class {class_name} in {", ".join(import_dirs)}')


def main(argv=None):
    parser = argparse.ArgumentParser(prog='job_runner', description=__doc__.split('\n')[0])
    parser.add_argument('--job_import_dirs_config', required=True)
    parser.add_argument('--job_class_name', required=True)
    parser.add_argument('--job_params', default='')
    parser.add_argument('--executor', default='')
    parser.add_argument('--executor_config', default='')
    parser.add_argument('--write_lock', default='')
    args = parser.parse_args(argv)

    sys.path.insert(0, os.getcwd())
    job_class = find_job_class(load_object(args.job_import_dirs_config), args.job_class_name)
    parse_pairs(args.executor_config)  # checked, not used: the job runs here
    log_path = os.environ.get('EXAMPLE_JOB_LOG')
    if log_path:
        with open(log_path, 'a') as log:
            log.write(f'{args.job_class_name} {args.job_params}\n')
    sys.stdout.flush()
    status = job_class(parse_pairs(args.job_params)).run() or 0
    print(f'job_runner: {args.job_class_name} exited {status} '
          f'(executor={args.executor or "local"}, write_lock={args.write_lock or "-"})')
    return status


if __name__ == '__main__':
    sys.exit(main())
