"""Training on TensorFlow's distributed runtime (`slimnets.training.distributed`):
one synchronous step of 2 workers of batch B is one step of batch 2B, and
a parameter server ends once the workers are done."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import checkpoints
from slimnets import cluster as cluster_lib
from slimnets import training
from slimnets.deployment import model_deploy
from slimnets.inference import models
from slimnets.train_config import DEFAULTS
from slimnets.training import distributed

from conftest import free_ports

BATCH = 3          # per worker
SIZE = 64
CLASSES = 5
THREAD_LIMIT_SECONDS = 120
CLI_STEPS = 30


def _spec_and_config():
    spec, _ = models.model_spec('mobilenet_v1_025', image_size=SIZE,
                                progress=False)
    config = DEFAULTS._replace(
        optimizer='sgd', learning_rate=0.5, learning_rate_decay_type='fixed',
        fine_tune_batch_norm=False, weight_decay=0.004, batch_size=BATCH,
        image_size=SIZE, max_steps=1)
    return spec._replace(num_classes=CLASSES), config


def _constant_inputs(images, labels):
    return lambda: (tf.constant(images), tf.constant(labels, tf.int64))


def _values(prefix, names):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in names}


def _train_in_process_cluster(train_dir, spec, config, worker_inputs, start,
                              names, clones=1, ps_tasks=1,
                              replicas_to_aggregate=None, max_steps=1):
    """`ps_tasks` parameter servers and one worker per `worker_inputs` entry
    ((images, labels) it trains on), each a tf.train.Server in this process
    and a thread; the chief starts from checkpoint `start`.  Asserts that
    every variable in `names` lives on the ps tasks (all of them used), that
    every thread ended and that each ps saw every worker done.

    Returns:
      {worker index: (first step, last step, losses)}.
    """
    workers = len(worker_inputs)
    ports = free_ports(ps_tasks + workers)
    ps_ports, worker_ports = ports[:ps_tasks], ports[ps_tasks:]
    hosts = dict(ps_hosts=','.join('127.0.0.1:%d' % p for p in ps_ports),
                 worker_hosts=','.join('127.0.0.1:%d' % p
                                       for p in worker_ports))
    roles = [cluster_lib.from_hosts(job_name='worker', task_index=k, **hosts)
             for k in range(workers)]
    ps_roles = [cluster_lib.from_hosts(job_name='ps', task_index=k, **hosts)
                for k in range(ps_tasks)]
    servers = [distributed.start_server(role) for role in roles + ps_roles]
    graphs = []
    for role, (images, labels) in zip(roles, worker_inputs):
        graph = tf.Graph()
        with graph.as_default(), tf.device(distributed.device_setter(role)):
            built = training.build_train_graph(
                spec, config, _constant_inputs(images, labels),
                distributed.deployment_config(role, num_clones=clones,
                                              clone_on_cpu=True),
                replicas_to_aggregate=replicas_to_aggregate)
            assert bool([op for op in graph.get_operations()
                         if op.name.startswith('clone_1/')]) == (clones > 1)
            variables = {v.op.name: v for v in tf.global_variables()}
            devices = [tf.DeviceSpec.from_string(variables[n].device)
                       for n in names]
            assert {d.job for d in devices} == {'ps'}
            assert {d.task for d in devices} == set(range(ps_tasks))
            init_fn = checkpoints.init_fn(start, var_list=tf.model_variables(),
                                          moving_average=False) \
                if role.is_chief else None
        graphs.append((graph, built, init_fn))

    outcome = {}

    def work(index):
        graph, built, init_fn = graphs[index]
        try:
            with graph.as_default():
                outcome[index] = distributed.run_worker(
                    roles[index], servers[index].target, built.train_op,
                    built.total_loss, built.global_step, max_steps=max_steps,
                    train_dir=str(train_dir), init_fn=init_fn,
                    sync_optimizer=built.sync_optimizer)
        except Exception as error:  # pylint: disable=broad-except
            outcome[index] = error

    def serve(k):
        outcome['ps', k] = distributed.serve(ps_roles[k],
                                             server=servers[workers + k])

    threads = [threading.Thread(target=work, args=(k,), daemon=True)
               for k in range(workers)] + [
        threading.Thread(target=serve, args=(k,), daemon=True)
        for k in range(ps_tasks)]
    began = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(1, THREAD_LIMIT_SECONDS - (time.time() - began)))
    assert not any(t.is_alive() for t in threads), outcome
    for index in range(workers):
        assert not isinstance(outcome[index], Exception), outcome[index]
    for k in range(ps_tasks):                 # each ps saw every worker done
        assert sorted(outcome['ps', k]) == list(range(workers))
    return outcome


@pytest.mark.parametrize('clones,ps_tasks', [(1, 1), (2, 2)])
def test_two_sync_workers_of_batch_b_step_as_one_process_of_2b(
        tmp_path, clones, ps_tasks):
    """Batch norm frozen (fine_tune_batch_norm=False): in training mode each
    worker would normalize with its own batch's statistics.  The single
    step and the workers start from the same checkpoint (the chief restores
    it through the scaffold's init_fn).  With 2 clones per worker
    (model_deploy inside the cluster) each clone reads the worker's whole
    batch: the clones' losses are averaged, so the step is the same; that
    case also spreads the variables over 2 ps tasks."""
    spec, config = _spec_and_config()
    rng = np.random.RandomState(0)
    images = rng.uniform(-1, 1, (2 * BATCH, SIZE, SIZE, 3)).astype(np.float32)
    labels = rng.randint(0, CLASSES, 2 * BATCH)

    # One process, batch 2B.
    start = str(tmp_path / 'start' / 'model.ckpt')
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        parts = training.build_train_graph(
            spec, config._replace(batch_size=2 * BATCH),
            _constant_inputs(images, labels),
            model_deploy.DeploymentConfig())
        trainable = tf.trainable_variables()
        names = [v.op.name for v in trainable]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, start, write_meta_graph=False)
            before = dict(zip(names, sess.run(trainable)))
            single_loss = sess.run([parts.train_op, parts.total_loss])[1]
            single = dict(zip(names, sess.run(trainable)))

    # ps_tasks ps + 2 workers in this process, batch B each.
    halves = [(images[part], labels[part])
              for part in np.split(np.arange(2 * BATCH), 2)]
    began = time.time()
    outcome = _train_in_process_cluster(
        tmp_path / 'run', spec, config, halves, start, names, clones=clones,
        ps_tasks=ps_tasks, replicas_to_aggregate=2, max_steps=1)
    first, last, losses = outcome[0]
    assert (first, last, len(losses)) == (0, 1, 1)
    # Each worker's loss is its half's; their mean is the 2B loss.
    mean_loss = (outcome[0][2][0] + outcome[1][2][0]) / 2
    assert mean_loss == pytest.approx(single_loss, abs=1e-5)

    final = tf.train.latest_checkpoint(str(tmp_path / 'run'))
    assert final.endswith('model.ckpt-1')
    workers = _values(final, names)
    moved = max(np.abs(single[n] - before[n]).max() for n in names)
    assert moved > 1e-2
    difference = max(np.abs(workers[n] - single[n]).max() /
                     max(1.0, np.abs(single[n]).max()) for n in names)
    print('2 sync workers of B (%d clone%s each) against one process of 2B: '
          'max scaled difference %.2g (loss %.6f vs %.6f), %.1f s' % (
              clones, '' if clones == 1 else 's', difference, mean_loss,
              single_loss, time.time() - began))
    assert difference < 1e-5, difference


def test_two_asynchronous_workers_share_the_global_step(tmp_path):
    """Without --sync-replicas every worker's step is a global step: two
    workers reach the last step together, each having applied its own
    gradients, and the chief's last checkpoint holds the moved weights."""
    spec, config = _spec_and_config()
    rng = np.random.RandomState(1)
    images = rng.uniform(-1, 1, (2 * BATCH, SIZE, SIZE, 3)).astype(np.float32)
    labels = rng.randint(0, CLASSES, 2 * BATCH)
    start = str(tmp_path / 'start' / 'model.ckpt')
    with tf.Graph().as_default():
        training.build_train_graph(spec, config, _constant_inputs(
            images, labels), model_deploy.DeploymentConfig())
        names = [v.op.name for v in tf.trainable_variables()]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, start, write_meta_graph=False)
    steps = 6
    outcome = _train_in_process_cluster(
        tmp_path / 'run', spec, config,
        [(images[:BATCH], labels[:BATCH]), (images[BATCH:], labels[BATCH:])],
        start, names, max_steps=steps)
    taken = [len(outcome[k][2]) for k in range(2)]
    last = max(outcome[k][1] for k in range(2))
    # Every step a worker ran moved the global step by one, and both took
    # part; a worker that read the step just before the other's increment
    # may run one step past max_steps.
    assert min(taken) >= 1 and sum(taken) == last >= steps, outcome
    final = tf.train.latest_checkpoint(str(tmp_path / 'run'))
    assert int(final.rsplit('-', 1)[1]) >= steps
    first, trained = _values(start, names), _values(final, names)
    assert max(np.abs(trained[n] - first[n]).max() for n in names) > 1e-3


# ------------------------------------------------------ the command line

PROCESS_LIMIT_SECONDS = 240   # the whole cluster, start to end
PS_EXIT_SECONDS = 60          # after the last worker


def _write_class_folders(folder, classes=2, per_class=4):
    import tensorflow as tf2
    rng = np.random.RandomState(0)
    for index in range(classes):
        os.makedirs(folder / ('class%d' % index))
        for number in range(per_class):
            pixels = np.full((40, 40, 3), 90 * index, np.int32) + \
                rng.randint(0, 60, (40, 40, 3))
            (folder / ('class%d' % index) / ('%d.png' % number)).write_bytes(
                tf2.io.encode_png(pixels.astype(np.uint8)).numpy())
    return folder


def _end(processes):
    """Ends every process still running, by its PID."""
    for process in processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)


def _checkpoint_step(train_dir):
    latest = tf.train.latest_checkpoint(str(train_dir))
    return -1 if latest is None else int(latest.rsplit('-', 1)[1])


def _wait(processes, logs, roles, began):
    """Polls until every role's process ended (or the time limits ran
    out); returns ({role: end time}, {role: its log})."""
    ended = {}
    while len(ended) < len(roles):
        for role in roles:
            if role not in ended and processes[role].poll() is not None:
                ended[role] = time.time()
        workers = [r for r in roles if r[0] == 'worker']
        if time.time() - began > PROCESS_LIMIT_SECONDS or (
                all(r in ended for r in workers) and time.time() - max(
                    ended[r] for r in workers) > PS_EXIT_SECONDS):
            break
        time.sleep(0.2)
    output = {}
    for role in roles:
        logs[role].flush()
        logs[role].seek(0)
        output[role] = logs[role].read()
    return ended, output


@pytest.mark.reads_no_shared
def test_one_ps_two_sync_workers_through_the_command_line(tmp_path):
    """`python -m slimnets train` as 1 ps + 2 workers with --sync-replicas
    (worker 1 placed by TF_CONFIG).  Worker 1 is killed once the chief has
    written the checkpoint of step 3 and started again.  The chief may go on
    alone meanwhile (after the first step, SyncReplicasOptimizer hands out
    one token per replica and any worker may take them), so how far the run
    got before worker 1 is back depends on the machine's load; what is
    certain is that the restarted worker joins the running cluster after
    step 3, reports done (the ps waits for every worker index before it
    ends), and both workers exit 0 at the last step, the ps by itself."""
    data = _write_class_folders(tmp_path / 'data')
    ps_port, *worker_ports = free_ports(3)
    train_dir = tmp_path / 'run'
    common = [sys.executable, '-m', 'slimnets', 'train', '--train-dir',
              str(train_dir), '--data', str(data), '--model',
              'mobilenet_v1_025', '--image-size', '32', '--batch-size', '2',
              '--max-steps', str(CLI_STEPS), '--save-every-steps', '3',
              '--optimizer', 'sgd', '--no-progress', '--sync-replicas']
    ps = '127.0.0.1:%d' % ps_port
    workers = ['127.0.0.1:%d' % p for p in worker_ports]
    hosts = ['--ps_hosts', ps, '--worker-hosts', ','.join(workers)]
    env = dict(os.environ)
    env.pop('TF_CONFIG', None)
    # Worker 1 from TF_CONFIG, as Kubernetes TFJob writes it: worker 0 is
    # the "chief" job there, so this is TF_CONFIG's worker 0.
    worker_env = dict(env, TF_CONFIG=json.dumps({
        'cluster': {'chief': [workers[0]], 'worker': [workers[1]],
                    'ps': [ps]},
        'task': {'type': 'worker', 'index': 0}}))
    roles = [('ps', 0), ('worker', 0), ('worker', 1)]
    logs = {role: open(tmp_path / ('%s%d.log' % role), 'w+')
            for role in roles + [('killed', 1)]}
    processes = {}
    began = time.time()
    try:
        for job, index in roles[:2]:
            processes[job, index] = subprocess.Popen(
                common + hosts + ['--job-name', job, '--task_index',
                                  str(index)],
                stdout=logs[job, index], stderr=subprocess.STDOUT, env=env)
        processes['killed', 1] = subprocess.Popen(
            common, stdout=logs['killed', 1], stderr=subprocess.STDOUT,
            env=worker_env)
        while _checkpoint_step(train_dir) < 3:   # (the chief saves step 0)
            assert all(p.poll() is None for p in processes.values()), \
                'a process ended before the checkpoint of step 3'
            assert time.time() - began < PROCESS_LIMIT_SECONDS
            time.sleep(0.05)
        os.kill(processes['killed', 1].pid, signal.SIGKILL)
        processes['killed', 1].wait(10)
        killed_at = time.time()
        processes['worker', 1] = subprocess.Popen(
            common, stdout=logs['worker', 1], stderr=subprocess.STDOUT,
            env=worker_env)
        ended, output = _wait(processes, logs, roles, began)
        for role in roles:
            assert role in ended, '%s%d still running after %.0f s:\n%s' % (
                role + (time.time() - began, output[role][-3000:]))
            assert processes[role].returncode == 0, output[role][-3000:]
    finally:
        _end(processes.values())
        for handle in logs.values():
            handle.close()
    last_worker = max(ended[r] for r in roles[1:])
    print('cluster: worker 1 killed after %.1f s, workers done %.1f s after '
          'its restart, the ps %.1f s after them' % (
              killed_at - began, last_worker - killed_at,
              ended['ps', 0] - last_worker))
    chief, rejoined = output['worker', 0], output['worker', 1]
    assert 'global step %d' % CLI_STEPS in chief
    assert 'worker 1 of 2 (1 ps task, 2 workers; from TF_CONFIG)' in rejoined
    # The restarted worker joined the running cluster: it did not start
    # again at step 0 (on a loaded machine the chief may have finished alone).
    first = int(re.search(r'steps (\d+)\.\.%d' % CLI_STEPS,
                          rejoined).group(1))
    assert 3 <= first <= CLI_STEPS, rejoined[-2000:]
    assert 'all 2 workers are done' in output['ps', 0]
    final = tf.train.latest_checkpoint(str(train_dir))
    assert final.endswith('model.ckpt-%d' % CLI_STEPS)
    assert 'MobilenetV1/Logits/Conv2d_1c_1x1/weights' in \
        tf.train.load_checkpoint(final).get_variable_to_shape_map()
    # research/slim's labels.txt form, one 'label:name' line per class.
    assert (train_dir / 'labels.txt').read_text().split() == [
        '0:class0', '1:class1']
    assert any(name.startswith('events.') for name in
               os.listdir(train_dir))    # the chief's summaries


def test_a_restarted_chief_resumes_from_its_last_checkpoint(tmp_path):
    """A chief started again, with the ps still up and after the whole
    cluster was restarted (a new ps: the variables are gone from the
    servers), restores train_dir's last checkpoint and continues from its
    step.  Asynchronous, 1 ps + 1 worker, servers in this process (the role
    names the worker's server as its master, so `train` starts none)."""
    data = _write_class_folders(tmp_path / 'data')
    options = dict(train_dir=str(tmp_path / 'run'), data=str(data),
                   model='mobilenet_v1_025', image_size=32, batch_size=2,
                   optimizer='sgd', save_every_steps=2, progress=False)

    def start_cluster():
        ps_port, worker_port = free_ports(2)
        hosts = dict(ps_hosts='127.0.0.1:%d' % ps_port,
                     worker_hosts='127.0.0.1:%d' % worker_port)
        distributed.start_server(cluster_lib.from_hosts(job_name='ps',
                                                        **hosts))
        role = cluster_lib.from_hosts(job_name='worker', **hosts)
        return role._replace(master=distributed.start_server(role).target)

    role = start_cluster()
    results = [training.train(max_steps=2, cluster=role, **options),
               training.train(max_steps=4, cluster=role, **options),
               training.train(max_steps=6, cluster=start_cluster(),
                              **options)]
    assert [(r.first_step, r.last_step, r.resumed, len(r.losses))
            for r in results] == [(0, 2, False, 2), (2, 4, True, 2),
                                  (4, 6, True, 2)]
    assert results[-1].checkpoint.endswith('model.ckpt-6')


@pytest.mark.parametrize('options', [
    dict(optimizer='momentum', moving_average_decay=0.99),
    dict(quantize_delay=0, fine_tune_batch_norm=True)])
def test_every_variable_of_a_worker_lives_on_the_ps(options):
    """Slots, moving averages, batch-norm statistics and quantization
    ranges are shared through the ps tasks (round robin), the sync step's
    local step stays on the worker.  Graph only: no server is needed."""
    spec, config = _spec_and_config()
    role = cluster_lib.from_hosts('127.0.0.1:1,127.0.0.1:2',
                                  '127.0.0.1:3,127.0.0.1:4', 'worker', 1)
    with tf.Graph().as_default(), tf.device(distributed.device_setter(role)):
        parts = training.build_train_graph(
            spec, config._replace(**options),
            lambda: (tf.zeros([BATCH, SIZE, SIZE, 3]),
                     tf.zeros([BATCH], tf.int64)),
            distributed.deployment_config(role), replicas_to_aggregate=2)
        parts.sync_optimizer.ready_for_local_init_op.mark_used()
        jobs = {(spec_.job, spec_.task) for spec_ in (
            tf.DeviceSpec.from_string(v.device) for v in tf.global_variables())}
        local = {tf.DeviceSpec.from_string(v.device).job
                 for v in tf.local_variables()}
        assert any('ExponentialMovingAverage' in v.op.name or
                   'min' in v.op.name for v in tf.global_variables())
    assert jobs == {('ps', 0), ('ps', 1)}
    assert local == {'worker'}
    assert tf.DeviceSpec.from_string(parts.train_op.device).job == 'worker'


def test_ctrl_c_ends_a_waiting_ps(tmp_path):
    """A ps waiting for workers that never come ends on Ctrl-C with one
    line (its wait polls, so the interrupt is not held in TensorFlow)."""
    ps_port, worker_port = free_ports(2)
    log = tmp_path / 'ps.log'
    with open(log, 'w') as handle:
        process = subprocess.Popen(
            [sys.executable, '-m', 'slimnets', 'train', '--train-dir',
             str(tmp_path / 'run'), '--data', str(tmp_path), '--ps-hosts',
             '127.0.0.1:%d' % ps_port, '--worker-hosts',
             '127.0.0.1:%d' % worker_port, '--job-name', 'ps'],
            stdout=handle, stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        began = time.time()
        while 'serving at' not in log.read_text():     # the server is up
            assert process.poll() is None, log.read_text()
            assert time.time() - began < PS_EXIT_SECONDS, log.read_text()
            time.sleep(0.1)
        time.sleep(2 * distributed.WAIT_SECONDS)
        process.send_signal(signal.SIGINT)
        process.wait(30)
    finally:
        _end([process])
    assert process.returncode == 1
    assert log.read_text().strip().splitlines()[-1] == (
        'slimnets train: error: interrupted (Ctrl-C); nothing half-written '
        'was kept')
