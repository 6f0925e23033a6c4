"""Step time on one machine: one process against 1 ps + 2 workers.

Run by hand (not in the tests):

    .venv/bin/python benchmarks/distributed.py [--steps 60] [--batch-size 8]

Trains --model (default mobilenet_v1_025) at --image-size on a fixed
random batch (so that the input pipeline is not measured), SGD, with
`slimnets.training.build_train_graph` (the graph `slimnets train` builds)
in three set-ups, each in fresh processes on 127.0.0.1:

  single  one process, batch B (plain session, as `slimnets train`), and
          batch 2B (what one synchronous step of the 2 workers computes);
  async   1 ps + 2 workers, batch B each: every worker's step is a global
          step (`slimnets.training.distributed.run_worker`, as `slimnets train
          --ps-hosts ... --worker-hosts ...`);
  sync    the same with --sync-replicas: a global step averages the 2
          workers' gradients (SyncReplicasOptimizer), 2B images.

For each it prints the seconds per global step and the images per second
(global steps per second x images per global step), measured on the
chief's clock from --warmup global steps to the end.  Every process shares
this machine's cores, so the cluster rows measure the runtime's overhead
(gRPC, variables on the ps), not a speed-up.  Writes distributed.json
under --output-dir too.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf

from slimnets import cluster
from slimnets import training
from slimnets.deployment import model_deploy
from slimnets.inference import models
from slimnets.train_config import DEFAULTS
from slimnets.training import distributed


def free_ports(count):
    sockets = []
    try:
        for _ in range(count):
            handle = socket.socket()
            handle.bind(('127.0.0.1', 0))
            sockets.append(handle)
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def _graph(args, deploy_config, replicas=None):
    """The training graph on a fixed random batch; returns TrainGraph."""
    spec, _ = models.model_spec(args.model, image_size=args.image_size,
                                progress=False)
    spec = spec._replace(num_classes=10)
    config = DEFAULTS._replace(
        optimizer='sgd', learning_rate=0.01, learning_rate_decay_type='fixed',
        batch_size=args.batch_size, image_size=args.image_size)
    rng = np.random.RandomState(args.task)
    images = rng.uniform(-1, 1, (args.batch_size, args.image_size,
                                 args.image_size, 3)).astype(np.float32)
    labels = rng.randint(0, 10, args.batch_size)
    return training.build_train_graph(
        spec, config, lambda: (tf.constant(images),
                               tf.constant(labels, tf.int64)),
        deploy_config, replicas_to_aggregate=replicas)


def run_role(args):
    """One process of a set-up; prints a JSON line of (time, global step)
    after each of its steps (workers and single) or nothing (ps)."""
    ticks = []
    if args.role == 'single':
        with tf.Graph().as_default():
            parts = _graph(args, model_deploy.DeploymentConfig())
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                for _ in range(args.steps):
                    step = sess.run([parts.train_op, parts.global_step])[1]
                    ticks.append((time.time(), int(step) + 1))
        print(json.dumps(ticks))
        return
    role = cluster.from_hosts(args.ps, args.workers, args.role, args.task)
    if role.is_ps:
        distributed.serve(role)
        return

    class Ticks(tf.train.SessionRunHook):
        def before_run(self, run_context):
            return tf.train.SessionRunArgs(parts.global_step)

        def after_run(self, run_context, run_values):
            ticks.append((time.time(), int(run_values.results)))

    server = distributed.start_server(role)
    with tf.Graph().as_default(), tf.device(distributed.device_setter(role)):
        parts = _graph(args, distributed.deployment_config(role),
                       role.num_workers if args.sync else None)
        distributed.run_worker(
            role, server.target, parts.train_op, parts.total_loss,
            parts.global_step, args.steps, sync_optimizer=parts.sync_optimizer,
            hooks=[Ticks()])
    print(json.dumps(ticks))


def _launch(args, extra, batch_size=None):
    command = [sys.executable, os.path.abspath(__file__), '--model',
               args.model, '--image-size', str(args.image_size),
               '--batch-size', str(batch_size or args.batch_size), '--steps',
               str(args.steps)] + extra
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    return subprocess.Popen(command, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)


def _collect(processes, timeout):
    outputs = []
    try:
        for process in processes:
            out, _ = process.communicate(timeout=timeout)
            if process.returncode != 0:
                raise RuntimeError('a process failed (%d)'
                                   % process.returncode)
            outputs.append(out)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return outputs


def measure(args, setup):
    """(seconds per global step, images per global step) of a set-up."""
    if setup.startswith('single'):
        per_step = args.batch_size * (2 if setup == 'single-2b' else 1)
        ticks = json.loads(_collect(
            [_launch(args, ['--role', 'single'], per_step)],
            args.timeout)[0].strip().splitlines()[-1])
    else:
        ports = free_ports(3)
        ps = '127.0.0.1:%d' % ports[0]
        workers = ','.join('127.0.0.1:%d' % p for p in ports[1:])
        hosts = ['--ps', ps, '--workers', workers] + (
            ['--sync'] if setup == 'sync' else [])
        processes = [_launch(args, hosts + ['--role', 'ps'])] + [
            _launch(args, hosts + ['--role', 'worker', '--task', str(k)])
            for k in range(2)]
        outputs = _collect(processes[1:] + processes[:1], args.timeout)
        ticks = json.loads(outputs[0].strip().splitlines()[-1])   # chief
        per_step = args.batch_size * (2 if setup == 'sync' else 1)
    window = [(t, s) for t, s in ticks if s >= args.warmup]
    (t0, s0), (t1, s1) = window[0], window[-1]
    return (t1 - t0) / (s1 - s0), per_step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default='mobilenet_v1_025')
    parser.add_argument('--image-size', type=int, default=128)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--steps', type=int, default=60,
                        help='global steps per set-up')
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--timeout', type=int, default=600)
    parser.add_argument('--output-dir',
                        default=os.path.join(os.path.dirname(__file__),
                                             'results'))
    # One process of a set-up (used by the benchmark itself).
    parser.add_argument('--role', choices=('single', 'ps', 'worker'))
    parser.add_argument('--task', type=int, default=0)
    parser.add_argument('--ps')
    parser.add_argument('--workers')
    parser.add_argument('--sync', action='store_true')
    args = parser.parse_args()
    if args.role:
        run_role(args)
        return
    rows = []
    print('%s at %d px, batch %d per process, SGD, %d global steps (from '
          'step %d), %d CPU cores' % (args.model, args.image_size,
                                      args.batch_size, args.steps,
                                      args.warmup, os.cpu_count()))
    print('%-34s %14s %14s %10s' % ('set-up', 'images/step', 's/step',
                                    'images/s'))
    names = {'single': '1 process, batch B',
             'single-2b': '1 process, batch 2B',
             'async': '1 ps + 2 workers, async',
             'sync': '1 ps + 2 workers, sync'}
    for setup in ('single', 'single-2b', 'async', 'sync'):
        seconds, per_step = measure(args, setup)
        rows.append({'setup': setup, 'images_per_step': per_step,
                     'seconds_per_step': seconds,
                     'images_per_second': per_step / seconds})
        print('%-34s %14d %14.4f %10.1f' % (names[setup], per_step, seconds,
                                            per_step / seconds))
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, 'distributed.json')
    with open(path, 'w') as handle:
        json.dump({'model': args.model, 'image_size': args.image_size,
                   'batch_size': args.batch_size, 'steps': args.steps,
                   'warmup': args.warmup, 'cpu_count': os.cpu_count(),
                   'rows': rows}, handle, indent=1)
    print('wrote %s' % path)


if __name__ == '__main__':
    main()
