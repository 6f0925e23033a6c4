"""Where this process stands in a training cluster (no TensorFlow here).

A cluster of TensorFlow's distributed runtime has a `ps` job (parameter
servers: they hold the variables) and a `worker` job (they compute the
gradients); worker 0 is the chief (it initializes or restores the
variables and writes checkpoints and summaries).  This process's place in
it comes from one of:

* the flags `--ps-hosts H:P,... --worker-hosts H:P,... --job-name
  {ps,worker} --task-index K` (`from_hosts`);
* research/slim's `--master grpc://H:P --task K --num_ps_tasks N
  --worker_replicas W`, where the servers are started by someone else
  (`from_master`);
* the `TF_CONFIG` environment variable, as Kubernetes TFJob and cloud
  trainers set it (`from_tf_config`): JSON with `cluster` (`ps`, `worker`
  and optionally one `chief` or `master` host) and `task` (`type`,
  `index`).  A `chief`/`master` task is worker 0 and the `worker` tasks
  follow it (worker i of TF_CONFIG is worker i + 1 here); a TF_CONFIG
  naming only one chief or worker and no ps describes one process.

`resolve(...)` picks the flags if any is given, else TF_CONFIG, else None
(one process).  Every inconsistency is a `UsageError` naming the fix.
"""

import collections
import json
import os
import re

from slimnets.errors import UsageError

__all__ = [
    'PS', 'WORKER', 'JOBS', 'TF_CONFIG', 'Cluster', 'parse_host',
    'parse_hosts', 'from_hosts', 'from_master', 'from_tf_config',
    'resolve', 'replicas_to_aggregate',
]

PS, WORKER = 'ps', 'worker'
JOBS = (PS, WORKER)
TF_CONFIG = 'TF_CONFIG'
_CHIEF_TYPES = ('chief', 'master')
# A host name (RFC 1123 labels), an IPv4 address, or [IPv6].
_HOST = re.compile(r'^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?'
                   r'(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)$')
_MASTER = re.compile(r'^grpc://(.+)$')


class Cluster(collections.namedtuple('Cluster', [
        'job_name', 'task_index', 'ps_hosts', 'worker_hosts', 'master',
        'num_ps_tasks', 'num_workers', 'source'])):
    """This process's role.

    Attributes:
      job_name: 'ps' or 'worker'.
      task_index: its index in the job.
      ps_hosts, worker_hosts: tuples of 'host:port', or None when the
        servers are started elsewhere (`from_master`).
      master: the session target ('grpc://host:port') when the servers are
        started elsewhere, else '' (this process starts its own server).
      num_ps_tasks, num_workers: the job sizes.
      source: where the role came from ('flags', 'TF_CONFIG', 'master').
    """
    __slots__ = ()

    @property
    def is_chief(self):
        """Worker 0 restores, initializes and writes checkpoints."""
        return self.job_name == WORKER and self.task_index == 0

    @property
    def is_ps(self):
        return self.job_name == PS

    def spec(self):
        """{'ps': [...], 'worker': [...]} for tf.train.ClusterSpec, or None
        when the servers are started elsewhere."""
        if self.ps_hosts is None:
            return None
        return {PS: list(self.ps_hosts), WORKER: list(self.worker_hosts)}

    def describe(self):
        """'worker 1 of 2 (ps: 1, from TF_CONFIG)' and the like."""
        return '%s %d of %d (%d ps task%s, %d worker%s; from %s)' % (
            self.job_name, self.task_index,
            self.num_ps_tasks if self.is_ps else self.num_workers,
            self.num_ps_tasks, '' if self.num_ps_tasks == 1 else 's',
            self.num_workers, '' if self.num_workers == 1 else 's',
            self.source)


def parse_host(text):
    """'host:port' (a name, IPv4 or [IPv6] and a port 1..65535).

    Raises:
      UsageError: naming the bad entry.
    """
    text = str(text).strip()
    host, colon, port = text.rpartition(':')
    if not colon or not _HOST.match(host) or not port.isdigit() or not (
            1 <= int(port) <= 65535):
        raise UsageError('%r is not host:port (e.g. 10.0.0.1:2222; a port '
                         'in 1..65535)' % text)
    return '%s:%d' % (host, int(port))


def parse_hosts(text):
    """A comma-separated list of host:port, as a tuple (at least one, no
    repeats)."""
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = [item for item in str(text).split(',') if item.strip()]
    if not items:
        raise UsageError('no hosts given (expected host:port,host:port,...)')
    hosts = tuple(parse_host(item) for item in items)
    repeated = sorted({h for h in hosts if hosts.count(h) > 1})
    if repeated:
        raise UsageError('%s is listed twice; every task needs its own '
                         'host:port' % ', '.join(repeated))
    return hosts


def _check_task(job_name, task_index, size, what):
    if job_name not in JOBS:
        raise UsageError('job name %r: must be ps or worker' % (job_name,))
    if not isinstance(task_index, int) or not 0 <= task_index < size:
        raise UsageError('%s task index %s is out of range: %s has %d %s '
                         'task%s (0..%d)' % (
                             job_name, task_index, what, size, job_name,
                             '' if size == 1 else 's', size - 1))


def from_hosts(ps_hosts, worker_hosts, job_name, task_index=0,
               source='flags'):
    """The role given by host lists (comma text or sequences)."""
    if not ps_hosts:
        raise UsageError('a cluster needs --ps-hosts (the parameter servers '
                         'hold the variables)')
    if not worker_hosts:
        raise UsageError('a cluster needs --worker-hosts')
    if not job_name:
        raise UsageError('a cluster needs --job-name ps or worker')
    ps, workers = parse_hosts(ps_hosts), parse_hosts(worker_hosts)
    both = sorted(set(ps) & set(workers))
    if both:
        raise UsageError('%s is both a ps and a worker; every task needs '
                         'its own host:port' % ', '.join(both))
    _check_task(job_name, task_index, len(ps) if job_name == PS
                else len(workers), '--%s-hosts' % job_name)
    return Cluster(job_name, task_index, ps, workers, '', len(ps),
                   len(workers), source)


def from_master(master, task, num_ps_tasks, worker_replicas):
    """research/slim's flags: servers started elsewhere, this process a
    worker whose session runs on `master` ('grpc://host:port'); None for
    their single-process values."""
    if not master and num_ps_tasks == 0 and worker_replicas == 1 \
            and task == 0:
        return None
    if num_ps_tasks < 1:
        raise UsageError('--worker_replicas=%d and --task=%d need '
                         '--num_ps_tasks >= 1 (the variables live on the ps '
                         'tasks)' % (worker_replicas, task))
    if worker_replicas < 1:
        raise UsageError('--worker_replicas must be at least 1 (got %d)'
                         % worker_replicas)
    match = _MASTER.match(master or '')
    if not match:
        raise UsageError('--master=%r: give this worker\'s server as '
                         'grpc://host:port (or --ps_hosts/--worker_hosts/'
                         '--job_name to start the servers here)' % (master,))
    parse_host(match.group(1))
    _check_task(WORKER, task, worker_replicas, '--worker_replicas')
    return Cluster(WORKER, task, None, None, master, num_ps_tasks,
                   worker_replicas, 'master')


def _host_list(cluster, name):
    hosts = cluster.get(name) or []
    if isinstance(hosts, str) or not isinstance(hosts, list):
        raise UsageError('TF_CONFIG cluster.%s must be a list of host:port'
                         % name)
    return hosts


def from_tf_config(text):
    """The role a TF_CONFIG value describes, or None for one process.

    Raises:
      UsageError: not JSON, a missing part, or a task type that
        `slimnets train` does not serve (evaluator).
    """
    try:
        value = json.loads(text)
    except ValueError as error:
        raise UsageError('TF_CONFIG is not JSON (%s); unset it or give '
                         '{"cluster": {...}, "task": {"type": ..., "index": '
                         '...}}' % error) from None
    if not isinstance(value, dict) or not isinstance(
            value.get('cluster'), dict):
        raise UsageError('TF_CONFIG has no "cluster" object; unset it or '
                         'give {"cluster": {"ps": [...], "worker": [...]}, '
                         '"task": {...}}')
    cluster, task = value['cluster'], value.get('task')
    unknown = sorted(set(cluster) - set(JOBS + _CHIEF_TYPES + ('evaluator',)))
    if unknown:
        raise UsageError('TF_CONFIG cluster job %s is not served (ps, worker '
                         'and one chief or master are)' % ', '.join(unknown))
    chiefs = _host_list(cluster, 'chief') + _host_list(cluster, 'master')
    if len(chiefs) > 1:
        raise UsageError('TF_CONFIG names %d chief/master hosts; give one'
                         % len(chiefs))
    ps, workers = _host_list(cluster, PS), chiefs + _host_list(cluster, WORKER)
    if not isinstance(task, dict) or 'type' not in task:
        raise UsageError('TF_CONFIG has no "task": {"type": ..., "index": '
                         '...}; add this process\'s task')
    kind, index = task['type'], task.get('index', 0)
    if not isinstance(index, int) or isinstance(index, bool):
        raise UsageError('TF_CONFIG task.index %r is not a whole number'
                         % (index,))
    if kind == 'evaluator':
        raise UsageError('TF_CONFIG task type "evaluator" is not served by '
                         'slimnets train; run `slimnets eval --checkpoint '
                         'TRAIN_DIR` on the chief\'s checkpoints instead')
    if kind not in JOBS + _CHIEF_TYPES:
        raise UsageError('TF_CONFIG task type %r is not served (ps, worker, '
                         'chief or master are)' % (kind,))
    if not ps:
        if len(workers) <= 1 and kind in (WORKER,) + _CHIEF_TYPES:
            return None    # one process (single-replica cloud jobs)
        raise UsageError('TF_CONFIG has %d workers and no ps: slimnets '
                         'trains with parameter servers; add a "ps" job'
                         % len(workers))
    if kind in _CHIEF_TYPES:
        if index != 0:
            raise UsageError('TF_CONFIG task %s %d: there is one %s (index '
                             '0)' % (kind, index, kind))
        job_name, task_index = WORKER, 0
    elif kind == WORKER:
        job_name, task_index = WORKER, index + len(chiefs)
        if index < 0 or index >= len(workers) - len(chiefs):
            raise UsageError('TF_CONFIG task worker %d is out of range: '
                             'cluster.worker has %d hosts' % (
                                 index, len(workers) - len(chiefs)))
    else:
        job_name, task_index = PS, index
    return from_hosts(ps, workers, job_name, task_index, source=TF_CONFIG)


def resolve(ps_hosts=None, worker_hosts=None, job_name=None,
            task_index=None, environ=None):
    """This process's role: from the flags when any is given, else from
    TF_CONFIG in `environ` (default os.environ), else None (one process)."""
    if any(v is not None and v != '' for v in (ps_hosts, worker_hosts,
                                               job_name, task_index)):
        return from_hosts(ps_hosts, worker_hosts, job_name,
                          0 if task_index is None else task_index)
    text = (os.environ if environ is None else environ).get(TF_CONFIG, '')
    if text.strip():
        return from_tf_config(text)
    return None


def replicas_to_aggregate(cluster, sync_replicas, replicas=None):
    """How many gradients one synchronous step aggregates (default: one per
    worker); None without --sync-replicas.

    Raises:
      UsageError: --sync-replicas without a cluster, or more replicas to
        aggregate than workers.
    """
    if not sync_replicas:
        if replicas is not None and replicas > 1:
            raise UsageError('--replicas-to-aggregate %d needs '
                             '--sync-replicas' % replicas)
        return None
    if cluster is None:
        raise UsageError('--sync-replicas needs a cluster (--ps-hosts, '
                         '--worker-hosts, --job-name; or TF_CONFIG)')
    replicas = cluster.num_workers if replicas is None else replicas
    if not 1 <= replicas <= cluster.num_workers:
        raise UsageError('--replicas-to-aggregate %d must be in 1..%d (the '
                         'workers)' % (replicas, cluster.num_workers))
    return None if cluster.is_ps else replicas
