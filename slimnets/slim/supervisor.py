"""A `tf.train.Supervisor` whose background threads build and run in its graph.

`tf_slim.learning.train` runs its checkpoint, summary and step-counter
services in threads started by the Supervisor.  A thread starts in
TensorFlow 2's default mode, eager execution, with no default graph of its
own: a program that built its graph in `with tf.Graph().as_default():`
(without `tf.compat.v1.disable_eager_execution()`) then sees those threads
read `global_step` eagerly and fail with "global_step ... is out of scope".

`GraphModeSupervisor` starts the same services, and `loop()` threads, with
the Supervisor's graph as the thread's default graph, which also puts the
thread in graph mode.

It also ends `learning.train(..., sync_optimizer=...)`: the chief queue
runner of a `tf.train.SyncReplicasOptimizer` waits in its accumulators'
take-gradient op for the next step's gradients.  Closing its queue (what
the coordinator does on stop) does not cancel that wait, so
`Supervisor.stop` waited for the thread until its grace period ran out
(120 s) and then raised "Coordinator stopped with threads still running".
`GraphModeSupervisor.stop` closes the session of such a queue runner after
asking the threads to stop, which cancels the wait (the session is closed
right after `stop` in `managed_session` anyway).

`slimnets.slim` gives `tf_slim.learning` this class in place of
`supervisor.Supervisor` (see `repair_learning`).
"""

import tensorflow.compat.v1 as tf
from tensorflow.core.util.event_pb2 import SessionLog
from tensorflow.python.training import supervisor as tf_supervisor  # pylint: disable=g-direct-tensorflow-import

from slimnets.slim import tf_compat

__all__ = [
    'SummaryThread', 'StepCounterThread', 'CheckpointThread',
    'waits_on_accumulator', 'GraphModeSupervisor', 'repair_learning',
]


def _in_supervisor_graph(thread_class):
    """A subclass of a Supervisor service thread that runs in `sv.graph`."""

    class GraphModeThread(thread_class):
        """`%s` running with its session's graph as default."""

        def __init__(self, sv, sess):
            super().__init__(sv, sess)
            self._session_graph = sess.graph

        def run(self):
            with self._session_graph.as_default():
                super().run()

    GraphModeThread.__name__ = 'GraphMode' + thread_class.__name__
    GraphModeThread.__qualname__ = GraphModeThread.__name__
    GraphModeThread.__doc__ = GraphModeThread.__doc__ % thread_class.__name__
    return GraphModeThread


SummaryThread = _in_supervisor_graph(tf_supervisor.SVSummaryThread)
StepCounterThread = _in_supervisor_graph(tf_supervisor.SVStepCounterThread)
CheckpointThread = _in_supervisor_graph(tf_supervisor.SVTimerCheckpointThread)


# Ops that block until enough gradients have been accumulated.
_TAKE_GRADIENT_OPS = frozenset({
    'AccumulatorTakeGradient', 'ResourceAccumulatorTakeGradient',
    'SparseAccumulatorTakeGradient'})


def waits_on_accumulator(queue_runner):
    """Whether a QueueRunner's enqueue ops depend on a take-gradient op (the
    chief queue runner of a SyncReplicasOptimizer does)."""
    pending = list(queue_runner.enqueue_ops)
    seen = set()
    while pending:
        op = pending.pop()
        if op in seen:
            continue
        seen.add(op)
        if op.type in _TAKE_GRADIENT_OPS:
            return True
        pending.extend(tensor.op for tensor in op.inputs)
        pending.extend(op.control_inputs)
    return False


class GraphModeSupervisor(tf_supervisor.Supervisor):
    """`tf.train.Supervisor` whose service threads run in graph mode, and
    whose `stop` ends a SyncReplicasOptimizer's chief queue runner."""

    def start_standard_services(self, sess):
        """Starts the summary, step-counter and checkpoint threads.

        Same services, conditions and return value as
        `tf.train.Supervisor.start_standard_services`; each thread runs with
        this Supervisor's graph as its default graph.

        Returns:
          The started threads (join them with `self.coord.join`), or None
          when the Supervisor has no logdir.
        """
        if not self.is_chief or not self._logdir:  # pylint: disable=protected-access
            # TensorFlow's own refusal (non-chief) or warning (no logdir).
            return tf_supervisor.Supervisor.start_standard_services(self, sess)
        # The start-of-session event: written from this (graph-mode) thread.
        if self.global_step is not None and self.summary_writer:
            step = tf.train.global_step(sess, self.global_step)
            self.summary_writer.add_session_log(
                SessionLog(status=SessionLog.START), step)
        threads = []
        if self.save_summaries_secs and self.summary_writer:
            if self.summary_op is not None:
                threads.append(SummaryThread(self, sess))
            if self.global_step is not None:
                threads.append(StepCounterThread(self, sess))
        if self.saver and self.save_model_secs:
            threads.append(CheckpointThread(self, sess))
        for thread in threads:
            thread.start()
        return threads

    def start_queue_runners(self, sess, queue_runners=None):
        """`Supervisor.start_queue_runners`; remembers `sess` when a runner
        waits on gradient accumulators (see `stop`)."""
        threads = tf_supervisor.Supervisor.start_queue_runners(
            self, sess, queue_runners)
        if queue_runners is None:
            queue_runners = self._graph.get_collection(  # pylint: disable=protected-access
                tf.GraphKeys.QUEUE_RUNNERS)
        if any(waits_on_accumulator(runner) for runner in queue_runners):
            self.__dict__.setdefault('_accumulator_sessions', []).append(sess)
        return threads

    def stop(self, threads=None, close_summary_writer=True,
             ignore_live_threads=False):
        """`Supervisor.stop`; first closes the sessions of queue runners
        that wait on gradient accumulators, which cancels that wait (closing
        their queues does not).  Those sessions cannot run anything after
        this."""
        self.coord.request_stop()
        for sess in self.__dict__.pop('_accumulator_sessions', []):
            sess.close()
        return tf_supervisor.Supervisor.stop(
            self, threads, close_summary_writer, ignore_live_threads)

    def loop(self, timer_interval_secs, target, args=None, kwargs=None):
        """`Supervisor.loop`, with `target` called in this graph."""
        graph = self._graph  # pylint: disable=protected-access

        def target_in_graph(*call_args, **call_kwargs):
            with graph.as_default():
                return target(*call_args, **call_kwargs)

        return tf_supervisor.Supervisor.loop(self, timer_interval_secs,
                                             target_in_graph, args, kwargs)


def repair_learning(learning_module):
    """Gives `tf_slim.learning` the graph-mode Supervisor; idempotent.

    Returns:
      True if the module was changed, False if it already had it.
    """
    current = learning_module.supervisor
    if getattr(current, 'Supervisor', None) is GraphModeSupervisor:
        return False
    learning_module.supervisor = tf_compat.ModuleWithMovedNames(
        current, {}, overrides={'Supervisor': GraphModeSupervisor})
    return True
