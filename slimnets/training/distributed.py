"""Training across processes and machines on TensorFlow's own distributed
runtime (`tf.train.Server`, `replica_device_setter`, `SyncReplicasOptimizer`,
`MonitoredTrainingSession`).

The roles (`slimnets.cluster.Cluster`):

* a parameter server (`serve`) starts its gRPC server, holds the variables
  the workers place on it, and returns once every worker has reported that
  it is done: each worker, when it finishes, enqueues its index on a
  shared FIFO queue (`DONE_QUEUE`) on every ps task, and the ps waits until
  it has seen each index once.  A cluster can so be launched and left: the
  parameter servers end by themselves.
* a worker builds the training graph under `device_setter` (variables
  round robin on the ps tasks, everything else on its own task), with
  `deployment_config` for research/slim's model_deploy, and runs it with
  `run_worker`: a `MonitoredTrainingSession` that stops at the last step.
  The chief (worker 0) initializes the variables, restores the starting
  checkpoint through the scaffold's `init_fn` (or the last checkpoint in
  the training folder, so a restarted chief resumes), and writes the
  checkpoints and summaries; the other workers wait until the variables
  are ready.  A worker that dies and is started again rejoins.

Checkpoints are written by the chief alone (`tf.train.Saver(sharded=False)`:
the values travel to the chief), so the training folder only has to exist
on the chief's machine.
"""

import logging
import time

import tensorflow.compat.v1 as tf
from tqdm import tqdm

from slimnets.deployment import model_deploy
from slimnets.errors import InputError

__all__ = [
    'DONE_QUEUE', 'STOP_GRACE_SECONDS', 'WAIT_SECONDS', 'CHIEF_READY',
    'cluster_spec', 'start_server', 'worker_device', 'device_setter',
    'deployment_config', 'session_config', 'done_ops', 'serve',
    'run_worker',
]

_log = logging.getLogger(__name__)

DONE_QUEUE = 'slimnets_workers_done'
STOP_GRACE_SECONDS = 10     # for the threads of a MonitoredSession to end
WAIT_SECONDS = 0.5          # between a worker's checks that the chief is ready
CHIEF_READY = 'slimnets_chief_ready'


def cluster_spec(cluster):
    """The tf.train.ClusterSpec of a Cluster that names its hosts."""
    return tf.train.ClusterSpec(cluster.spec())


def start_server(cluster):
    """Starts this task's gRPC server (in this process) and returns it.

    Raises:
      InputError: the port cannot be listened on.
    """
    host = (cluster.ps_hosts if cluster.is_ps else
            cluster.worker_hosts)[cluster.task_index]
    try:
        return tf.train.Server(cluster_spec(cluster),
                               job_name=cluster.job_name,
                               task_index=cluster.task_index, start=True)
    except tf.errors.OpError as error:
        raise InputError('cannot start the %s %d server on %s (%s); is the '
                         'port in use, or the host not this machine?' % (
                             cluster.job_name, cluster.task_index, host,
                             error.message.splitlines()[0])) from None


def worker_device(cluster):
    return '/job:worker/task:%d' % cluster.task_index


def device_setter(cluster):
    """Variables round robin on the ps tasks, other ops on this worker."""
    return tf.train.replica_device_setter(
        ps_tasks=cluster.num_ps_tasks, ps_device='/job:ps',
        worker_device=worker_device(cluster))


def deployment_config(cluster, num_clones=1, clone_on_cpu=False):
    """research/slim's model_deploy configuration of this worker."""
    return model_deploy.DeploymentConfig(
        num_clones=num_clones, clone_on_cpu=clone_on_cpu,
        replica_id=cluster.task_index, num_replicas=cluster.num_workers,
        num_ps_tasks=cluster.num_ps_tasks)


def session_config(cluster):
    """This task sees the ps tasks and itself only, so that it starts (and
    restarts) whatever the other workers do."""
    own = ('/job:ps/task:%d' % cluster.task_index if cluster.is_ps
           else worker_device(cluster))
    filters = [own] if cluster.is_ps else ['/job:ps', own]
    return tf.ConfigProto(allow_soft_placement=True, device_filters=filters)


def _done_queue(ps_task):
    with tf.device('/job:ps/task:%d' % ps_task):
        return tf.FIFOQueue(-1, [tf.int32], shapes=[[]],
                            shared_name=DONE_QUEUE,
                            name='%s_%d' % (DONE_QUEUE, ps_task))


def done_ops(cluster):
    """Ops that report this worker done to every ps task."""
    index = tf.constant(cluster.task_index, tf.int32)
    return [_done_queue(k).enqueue(index) for k in range(cluster.num_ps_tasks)]


def serve(cluster, server=None):
    """Runs a parameter server until every worker is done.

    Args:
      cluster: a ps role.
      server: this task's running server (default: started here).

    Returns:
      The indices of the workers, in the order they finished.
    """
    server = server or start_server(cluster)
    _log.info('%s serving at %s', cluster.describe(),
              cluster.ps_hosts[cluster.task_index])
    graph = tf.Graph()
    with graph.as_default():
        queue = _done_queue(cluster.task_index)
        size, token = queue.size(), queue.dequeue()
    finished = []
    with tf.Session(server.target, graph=graph,
                    config=session_config(cluster)) as sess:
        while len(finished) < cluster.num_workers:
            # Polled (only this task dequeues), so that Ctrl-C ends the
            # wait: a blocked dequeue would not return to Python.
            if not sess.run(size):
                time.sleep(WAIT_SECONDS)
                continue
            index = int(sess.run(token))
            if index not in finished:
                finished.append(index)
                _log.info('worker %d is done (%d of %d)', index,
                          len(finished), cluster.num_workers)
    return finished


def _wait_for_chief(target, config, not_ready):
    """Polls until `not_ready` (the variables not initialized by the chief)
    is empty: MonitoredTrainingSession's own wait polls every 30 s."""
    began = last_note = time.time()
    with tf.Session(target, config=config) as sess:
        while True:
            missing = sess.run(not_ready)
            if not len(missing):
                return
            if time.time() - last_note > 30:
                last_note = time.time()
                _log.info('waiting %.0f s for the chief to initialize the '
                          'model (%s not ready)', last_note - began,
                          missing[0].decode())
            time.sleep(WAIT_SECONDS)


class _Steps(tf.train.SessionRunHook):
    """Reads the global step when the session is ready and at the end."""

    def __init__(self, global_step):
        self._global_step = global_step
        self.first = self.last = None

    def after_create_session(self, session, coord):
        self.first = int(session.run(self._global_step))

    def end(self, session):
        self.last = int(session.run(self._global_step))


class _EndChiefQueueRunner(tf.train.SessionRunHook):
    """Ends the SyncReplicasOptimizer's chief queue runner at the end.

    That thread waits in the gradient accumulators' take op for a step that
    will not come, and closing its queue does not cancel the wait, so the
    session's close would wait out the grace period.  Placed after the
    checkpoint saver (whose `end` writes the last checkpoint), this asks
    the threads to stop and closes the session, which cancels the wait.
    """

    def __init__(self):
        self._coord = None

    def after_create_session(self, session, coord):
        self._coord = coord

    def end(self, session):
        self._coord.request_stop()
        session.close()


def run_worker(cluster, target, train_op, total_loss, global_step,
               max_steps, train_dir=None, init_fn=None, sync_optimizer=None,
               save_every_steps=100, summary_every_steps=10, progress=False,
               hooks=()):
    """Trains as one worker until the global step reaches `max_steps`.

    Builds its last ops (the done reports, the saver) in the default graph,
    which holds `train_op` and is finalized by the session.

    Args:
      cluster: this worker's role.
      target: the session target (its server's, or research/slim's
        --master).
      train_op, total_loss, global_step: from the training graph.
      train_dir: where the chief writes checkpoints and summaries (and
        resumes from).
      init_fn: `fn(session)` the chief runs after initializing the
        variables when `train_dir` has no checkpoint.
      sync_optimizer: the graph's tf.train.SyncReplicasOptimizer, if any.
      hooks: more tf.train.SessionRunHooks (every worker's).

    Returns:
      (first global step, last global step, this worker's losses).
    """
    done = done_ops(cluster)
    steps = _Steps(global_step)
    hooks = [tf.train.StopAtStepHook(last_step=max_steps), steps] + list(
        hooks)
    if sync_optimizer is not None:
        # No initial tokens: each worker's first gradient waits for the
        # first synchronous step (else one worker could take the first
        # step's tokens and give it two gradients of its own).
        hooks.insert(0, sync_optimizer.make_session_run_hook(
            cluster.is_chief, num_tokens=0))
        if cluster.is_chief:
            hooks.append(_EndChiefQueueRunner())
    # The chief marks the model ready only once it is initialized and
    # restored (its local init op, run after init_fn or the restore of
    # train_dir's checkpoint), so no worker reads the initial values.
    with tf.device('/job:ps/task:0'):
        chief_ready = tf.Variable(True, trainable=False, collections=[],
                                  name=CHIEF_READY)
    # (The chief's own local init waits for the global variables only.)
    ready_for_local_init = tf.report_uninitialized_variables(
        tf.global_variables() + ([] if cluster.is_chief else [chief_ready]))
    scaffold = tf.train.Scaffold(
        init_fn=(lambda _, session: init_fn(session)) if init_fn else None,
        ready_op=tf.report_uninitialized_variables(
            tf.global_variables() + tf.local_variables() + [chief_ready]),
        ready_for_local_init_op=ready_for_local_init,
        local_init_op=tf.group(tf.train.Scaffold.default_local_init_op(),
                               chief_ready.initializer)
        if cluster.is_chief else None,
        saver=tf.train.Saver(max_to_keep=3, sharded=False))
    config = session_config(cluster)
    if not cluster.is_chief:
        _wait_for_chief(target, config, ready_for_local_init)
    chief_dir = train_dir if cluster.is_chief else None
    losses = []
    _log.info('%s: session on %s', cluster.describe(), target)
    with tf.train.MonitoredTrainingSession(
            master=target, is_chief=cluster.is_chief,
            checkpoint_dir=chief_dir, scaffold=scaffold, hooks=hooks,
            save_checkpoint_steps=save_every_steps,
            save_checkpoint_secs=None,
            save_summaries_steps=summary_every_steps if chief_dir else None,
            save_summaries_secs=None, log_step_count_steps=0,
            config=config, stop_grace_period_secs=STOP_GRACE_SECONDS,
            save_graph_def=False) as sess:
        with tqdm(total=max_steps, initial=steps.first, unit='step',
                  disable=not progress, leave=False) as bar:
            while not sess.should_stop():
                _, loss, step = sess.run([train_op, total_loss, global_step])
                losses.append(float(loss))
                bar.update(max(0, int(step) - bar.n))
                bar.set_postfix(loss='%.4f' % loss)
                if len(losses) % summary_every_steps == 0:
                    _log.info('global step %d: loss %.4f', step, loss)
    with tf.Session(target, config=config) as sess:
        sess.run(done)
    _log.info('%s: done at global step %s', cluster.describe(), steps.last)
    return steps.first, steps.last, losses
