"""A process's role in a training cluster (`slimnets.cluster`): host lists,
TF_CONFIG, research/slim's --master, and their usage errors through
`slimnets train` (exit 2, one line, before any work starts)."""

import json

import pytest

from slimnets import cluster
from slimnets.errors import UsageError

PS = '10.0.0.1:2222'
WORKERS = '10.0.0.2:2222,10.0.0.3:2222'


@pytest.mark.parametrize('text, expected', [
    ('127.0.0.1:2222', '127.0.0.1:2222'),
    (' trainer-0.svc.cluster.local:80 ', 'trainer-0.svc.cluster.local:80'),
    ('[::1]:2222', '[::1]:2222'),
    ('localhost:0065535', 'localhost:65535'),
])
def test_hosts_are_parsed(text, expected):
    assert cluster.parse_host(text) == expected


@pytest.mark.parametrize('text', [
    'nohost', 'host:0', 'host:65536', ':2222', 'a b:1', 'host:port',
    'host:-1', '-bad:22', 'http://host:22'])
def test_bad_hosts_are_usage_errors(text):
    with pytest.raises(UsageError, match='host:port'):
        cluster.parse_host(text)


def test_roles_from_host_lists():
    worker = cluster.from_hosts(PS, WORKERS, 'worker', 1)
    assert (worker.job_name, worker.task_index, worker.num_ps_tasks,
            worker.num_workers, worker.is_chief, worker.is_ps) == (
                'worker', 1, 1, 2, False, False)
    assert worker.spec() == {'ps': [PS], 'worker': WORKERS.split(',')}
    assert cluster.from_hosts(PS, WORKERS, 'worker', 0).is_chief
    assert cluster.from_hosts(PS, WORKERS, 'ps', 0).is_ps
    assert 'worker 1 of 2' in worker.describe()


@pytest.mark.parametrize('args, fragment', [
    ((PS, WORKERS, 'worker', 2), 'worker task index 2 is out of range'),
    ((PS, WORKERS, 'ps', 1), 'ps task index 1 is out of range'),
    ((PS, WORKERS, 'chief', 0), "job name 'chief'"),
    ((PS, WORKERS + ',10.0.0.3:2222', 'worker', 0), 'listed twice'),
    ((PS, PS, 'worker', 0), 'both a ps and a worker'),
    (('', WORKERS, 'worker', 0), '--ps-hosts'),
    ((PS, '', 'worker', 0), '--worker-hosts'),
    ((PS, WORKERS, None, 0), '--job-name'),
])
def test_inconsistent_host_lists_are_usage_errors(args, fragment):
    with pytest.raises(UsageError, match=fragment):
        cluster.from_hosts(*args)


def _tf_config(task_type, index, **jobs):
    return json.dumps({'cluster': jobs,
                       'task': {'type': task_type, 'index': index}})


def test_tf_config_chief_is_worker_0_and_the_workers_follow():
    jobs = dict(chief=['c:1'], worker=['w0:1', 'w1:1'], ps=['p0:1', 'p1:1'])
    chief = cluster.from_tf_config(_tf_config('chief', 0, **jobs))
    first = cluster.from_tf_config(_tf_config('worker', 0, **jobs))
    second = cluster.from_tf_config(_tf_config('worker', 1, **jobs))
    ps = cluster.from_tf_config(_tf_config('ps', 1, **jobs))
    assert chief.worker_hosts == ('c:1', 'w0:1', 'w1:1')
    assert [(r.job_name, r.task_index) for r in (chief, first, second, ps)] \
        == [('worker', 0), ('worker', 1), ('worker', 2), ('ps', 1)]
    assert chief.is_chief and not first.is_chief
    assert chief.source == 'TF_CONFIG'
    # "master" is the older name of "chief"; without either worker 0 leads.
    master = cluster.from_tf_config(_tf_config(
        'master', 0, master=['m:1'], worker=['w0:1'], ps=['p:1']))
    assert master.is_chief and master.worker_hosts == ('m:1', 'w0:1')
    plain = cluster.from_tf_config(_tf_config('worker', 0, worker=['w0:1'],
                                              ps=['p:1']))
    assert plain.is_chief


def test_tf_config_of_one_process_is_none():
    """Cloud trainers set TF_CONFIG for single-replica jobs too."""
    assert cluster.from_tf_config(_tf_config('chief', 0, chief=['c:1'])) \
        is None
    assert cluster.from_tf_config(_tf_config('worker', 0, worker=['w:1'])) \
        is None


@pytest.mark.parametrize('text, fragment', [
    (_tf_config('evaluator', 0, chief=['c:1'], ps=['p:1'],
                evaluator=['e:1']), 'evaluator'),
    (_tf_config('worker', 0, worker=['a:1', 'b:1']), 'no ps'),
    (_tf_config('worker', 2, worker=['a:1', 'b:1'], ps=['p:1']),
     'out of range'),
    (_tf_config('chief', 1, chief=['c:1'], ps=['p:1']), 'one chief'),
    (_tf_config('ps', 1, worker=['a:1'], ps=['p:1']), 'out of range'),
    (_tf_config('worker', 0, worker=['a:1'], ps=['p:1'], trainer=['t:1']),
     'trainer'),
    (_tf_config('worker', 0, chief=['a:1', 'b:1'], ps=['p:1']), '2 chief'),
    (_tf_config('worker', 'x', worker=['a:1'], ps=['p:1']), 'not a whole'),
    (_tf_config('worker', 0, worker='a:1', ps=['p:1']), 'list'),
    ('{"cluster": ', 'not JSON'),
    ('{"task": {"type": "worker"}}', 'no "cluster"'),
    ('{"cluster": {"ps": ["p:1"], "worker": ["a:1"]}}', 'no "task"'),
])
def test_bad_tf_config_is_one_usage_error(text, fragment):
    with pytest.raises(UsageError, match=fragment):
        cluster.from_tf_config(text)


def test_flags_come_before_tf_config():
    environ = {'TF_CONFIG': _tf_config('ps', 0, worker=['a:1'],
                                       ps=['p:1'])}
    assert cluster.resolve(environ=environ).is_ps
    flagged = cluster.resolve(PS, WORKERS, 'worker', 1, environ=environ)
    assert (flagged.job_name, flagged.task_index, flagged.source) == (
        'worker', 1, 'flags')
    assert cluster.resolve(environ={}) is None
    assert cluster.resolve(environ={'TF_CONFIG': ' '}) is None


def test_replicas_to_aggregate():
    worker = cluster.from_hosts(PS, WORKERS, 'worker', 0)
    assert cluster.replicas_to_aggregate(worker, True) == 2
    assert cluster.replicas_to_aggregate(worker, True, 1) == 1
    assert cluster.replicas_to_aggregate(worker, False) is None
    assert cluster.replicas_to_aggregate(None, False, 1) is None
    with pytest.raises(UsageError, match='must be in 1..2'):
        cluster.replicas_to_aggregate(worker, True, 3)
    with pytest.raises(UsageError, match='needs a cluster'):
        cluster.replicas_to_aggregate(None, True)
    with pytest.raises(UsageError, match='needs --sync-replicas'):
        cluster.replicas_to_aggregate(worker, False, 2)


def test_research_slim_master_flags():
    assert cluster.from_master('', 0, 0, 1) is None
    role = cluster.from_master('grpc://10.0.0.2:2222', 1, 2, 2)
    assert (role.job_name, role.task_index, role.num_ps_tasks,
            role.num_workers, role.master, role.spec()) == (
                'worker', 1, 2, 2, 'grpc://10.0.0.2:2222', None)
    for args, fragment in [
            (('grpc://h:1', 0, 0, 2), '--num_ps_tasks'),
            (('', 0, 1, 2), 'grpc://host:port'),
            (('h:1', 0, 1, 2), 'grpc://host:port'),
            (('grpc://h:1', 2, 1, 2), 'out of range')]:
        with pytest.raises(UsageError, match=fragment):
            cluster.from_master(*args)


TRAIN = ('train', '--train-dir', 'run', '--data', 'data', '--model',
         'mobilenet_v1_025')


@pytest.mark.parametrize('args, fragments', [
    (('--ps-hosts', 'h', '--worker-hosts', WORKERS, '--job-name', 'ps'),
     ["'h' is not host:port"]),
    (('--ps_hosts', PS, '--worker_hosts', WORKERS, '--job_name', 'worker',
      '--task_index', '2'), ['worker task index 2 is out of range']),
    (('--ps-hosts', PS, '--worker-hosts', WORKERS, '--job-name', 'chief'),
     ['--job-name', 'chief']),
    (('--ps-hosts', PS, '--worker-hosts', WORKERS, '--job-name', 'worker',
      '--task-index', '-1'), ['--task-index']),
    (('--ps-hosts', PS, '--worker-hosts', WORKERS, '--job-name', 'worker',
      '--sync-replicas', '--replicas-to-aggregate', '3'),
     ['--replicas-to-aggregate 3 must be in 1..2']),
    (('--ps-hosts', PS, '--worker-hosts', WORKERS),
     ['--job-name ps or worker']),
    (('--sync_replicas',), ['--sync-replicas needs a cluster']),
])
def test_cluster_flags_are_checked_where_parsed(args, fragments, cli,
                                                one_line_error, monkeypatch):
    monkeypatch.delenv('TF_CONFIG', raising=False)
    one_line_error(cli(*TRAIN + args), *fragments, status=2)


def test_a_tf_config_evaluator_is_refused(cli, one_line_error, monkeypatch):
    monkeypatch.setenv('TF_CONFIG', _tf_config(
        'evaluator', 0, chief=['c:1'], ps=['p:1'], evaluator=['e:1']))
    one_line_error(cli(*TRAIN), 'evaluator', 'slimnets eval', status=2)
