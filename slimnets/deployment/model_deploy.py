"""research/slim's `deployment/model_deploy.py`: a model in several clones.

Same names, signatures and semantics as the reference:

* `create_clones(config, model_fn)` calls `model_fn` once per clone, clone
  i under the name scope `clone_i/` (no scope with one clone) on
  `config.clone_device(i)`, with every slim variable created on
  `config.variables_device()` and shared (clones after the first reuse
  the variable scope).
* `optimize_clones(clones, optimizer)` forms each clone's loss as the sum of
  the LOSSES collected under its scope, divided by the number of clones when
  there are several, adds the regularization losses to the first clone
  only, computes each clone's gradients on its device and sums them across
  clones; `total_loss` is the sum of the clone losses.  With batch B per
  clone this is the gradient of the mean loss over all N x B examples.
* `deploy(...)` does both, applies the gradients with the first clone's
  update ops, and merges the first clone's summaries with the loss
  summaries ('clone_i/clone_loss', 'regularization_loss', 'total_loss').
"""

import collections

import tensorflow.compat.v1 as tf

from slimnets import slim
from slimnets.errors import InputError

__all__ = ['create_clones', 'deploy', 'optimize_clones', 'DeployedModel',
           'DeploymentConfig', 'Clone']

# outputs: what model_fn returned; scope: the clone's name scope; device:
# the clone's device.
Clone = collections.namedtuple('Clone', ['outputs', 'scope', 'device'])

# train_op: total_loss after the updates; summary_op: merged summaries;
# total_loss: sum of the clone losses; clones: the Clones.
DeployedModel = collections.namedtuple('DeployedModel', [
    'train_op', 'summary_op', 'total_loss', 'clones'])

_deployment_params = {'num_clones': 1, 'clone_on_cpu': False,
                      'replica_id': 0, 'num_replicas': 1, 'num_ps_tasks': 0,
                      'worker_job_name': 'worker', 'ps_job_name': 'ps'}


def create_clones(config, model_fn, args=None, kwargs=None):
    """Builds `config.num_clones` clones of `model_fn(*args, **kwargs)`.

    Losses the model adds to tf.GraphKeys.LOSSES are found per clone by its
    scope (so are its summaries and update ops).

    Returns:
      A list of `Clone(outputs, scope, device)`.
    """
    clones = []
    args = args or []
    kwargs = kwargs or {}
    with slim.arg_scope([slim.model_variable, slim.variable],
                        device=config.variables_device()):
        for index in range(config.num_clones):
            with tf.name_scope(config.clone_scope(index)) as clone_scope:
                device = config.clone_device(index)
                with tf.device(device), tf.variable_scope(
                        tf.get_variable_scope(),
                        reuse=True if index > 0 else None):
                    outputs = model_fn(*args, **kwargs)
                clones.append(Clone(outputs, clone_scope, device))
    return clones


def _gather_clone_loss(clone, num_clones, regularization_losses):
    """The clone's loss: its LOSSES summed (and divided by `num_clones`
    when several) plus `regularization_losses`; None when it has none."""
    clone_loss = regularization_loss = None
    parts = []
    with tf.device(clone.device):
        losses = tf.get_collection(tf.GraphKeys.LOSSES, clone.scope)
        if losses:
            clone_loss = tf.add_n(losses, name='clone_loss')
            if num_clones > 1:
                clone_loss = tf.div(clone_loss, 1.0 * num_clones,
                                    name='scaled_clone_loss')
            parts.append(clone_loss)
        if regularization_losses:
            regularization_loss = tf.add_n(regularization_losses,
                                           name='regularization_loss')
            parts.append(regularization_loss)
        sum_loss = tf.add_n(parts) if parts else None
    if clone_loss is not None:
        tf.summary.scalar(clone.scope + '/clone_loss', clone_loss)
    if regularization_loss is not None:
        tf.summary.scalar('regularization_loss', regularization_loss)
    return sum_loss


def _optimize_clone(optimizer, clone, num_clones, regularization_losses,
                    **kwargs):
    """(clone loss, [(gradient, variable)]) of one clone."""
    sum_loss = _gather_clone_loss(clone, num_clones, regularization_losses)
    gradients = None
    if sum_loss is not None:
        with tf.device(clone.device):
            gradients = optimizer.compute_gradients(sum_loss, **kwargs)
    return sum_loss, gradients


def optimize_clones(clones, optimizer, regularization_losses=None, **kwargs):
    """Losses and gradients of the clones, the gradients summed.

    Args:
      clones: from `create_clones`.
      optimizer: a tf.train.Optimizer.
      regularization_losses: added to the first clone's loss (default the
        REGULARIZATION_LOSSES collection; [] for none).
      **kwargs: passed to `optimizer.compute_gradients` (e.g. var_list).

    Returns:
      (total_loss: scalar sum of the clone losses, [(summed gradient,
      variable)]).
    """
    gradients, clone_losses = [], []
    if regularization_losses is None:
        regularization_losses = tf.get_collection(
            tf.GraphKeys.REGULARIZATION_LOSSES)
    for clone in clones:
        with tf.name_scope(clone.scope):
            loss, clone_gradients = _optimize_clone(
                optimizer, clone, len(clones), regularization_losses,
                **kwargs)
            if loss is not None:
                clone_losses.append(loss)
                gradients.append(clone_gradients)
            regularization_losses = None      # the first clone's only
    total_loss = tf.add_n(clone_losses, name='total_loss')
    return total_loss, _sum_clones_gradients(gradients)


def deploy(config, model_fn, args=None, kwargs=None, optimizer=None,
           summarize_gradients=False):
    """Creates the clones and, with an optimizer, the training op.

    Returns:
      A `DeployedModel(train_op, summary_op, total_loss, clones)`.
    """
    summaries = set(tf.get_collection(tf.GraphKeys.SUMMARIES))
    clones = create_clones(config, model_fn, args, kwargs)
    first_clone = clones[0]
    update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS, first_clone.scope)
    train_op = total_loss = None
    with tf.device(config.optimizer_device()):
        if optimizer:
            with tf.device(config.variables_device()):
                global_step = tf.train.get_or_create_global_step()
            total_loss, gradients = optimize_clones(clones, optimizer)
            if gradients:
                if summarize_gradients:
                    summaries |= set(_add_gradients_summaries(gradients))
                update_ops.append(optimizer.apply_gradients(
                    gradients, global_step=global_step))
                with tf.control_dependencies([tf.group(*update_ops)]):
                    train_op = tf.identity(total_loss, name='train_op')
        else:
            clone_losses = []
            regularization_losses = tf.get_collection(
                tf.GraphKeys.REGULARIZATION_LOSSES)
            for clone in clones:
                with tf.name_scope(clone.scope):
                    loss = _gather_clone_loss(clone, len(clones),
                                              regularization_losses)
                    if loss is not None:
                        clone_losses.append(loss)
                    regularization_losses = None
            if clone_losses:
                total_loss = tf.add_n(clone_losses, name='total_loss')
        summaries |= set(tf.get_collection(tf.GraphKeys.SUMMARIES,
                                           first_clone.scope))
        if total_loss is not None:
            summaries.add(tf.summary.scalar('total_loss', total_loss))
        summary_op = tf.summary.merge(list(summaries), name='summary_op') \
            if summaries else None
    return DeployedModel(train_op, summary_op, total_loss, clones)


def _sum_clones_gradients(clone_grads):
    """[(gradient summed over clones, variable)] from one list per clone
    (each already scaled by 1 / num_clones through its loss)."""
    summed = []
    for pairs in zip(*clone_grads):
        variable = pairs[0][1]
        grads = [g for g, v in pairs if g is not None]
        if any(v is not variable for _, v in pairs):
            raise InputError('the clones do not share the variable %s'
                             % variable.op.name)
        if len(grads) > 1:
            summed.append((tf.add_n(grads, name=variable.op.name +
                                    '/sum_grads'), variable))
        elif grads:
            summed.append((grads[0], variable))
    return summed


def _add_gradients_summaries(grads_and_vars):
    """Histogram summaries of each gradient and its norm."""
    summaries = []
    for grad, var in grads_and_vars:
        if grad is None:
            continue
        values = grad.values if isinstance(grad, tf.IndexedSlices) else grad
        summaries.append(tf.summary.histogram(var.op.name + ':gradient',
                                              values))
        summaries.append(tf.summary.histogram(
            var.op.name + ':gradient_norm', tf.global_norm([values])))
    return summaries


class DeploymentConfig(object):
    """How to deploy a model: clones per replica, replicas, ps tasks.

    One process (num_replicas 1, num_ps_tasks 0): clones on
    '/device:GPU:i' (or all on '/device:CPU:0' with `clone_on_cpu`), the
    variables on '/device:CPU:0'.  With ps tasks the variables go round
    robin over '/job:ps/task:k' and the clones to '/job:worker'.
    """

    def __init__(self, num_clones=1, clone_on_cpu=False, replica_id=0,
                 num_replicas=1, num_ps_tasks=0, worker_job_name='worker',
                 ps_job_name='ps'):
        if num_clones < 1:
            raise InputError('num_clones must be at least 1 (got %s)'
                             % num_clones)
        if num_replicas > 1 and num_ps_tasks < 1:
            raise InputError('with several replicas num_ps_tasks must be '
                             'positive')
        if (num_replicas > 1 or num_ps_tasks > 0) and not (
                worker_job_name and ps_job_name):
            raise InputError('with replicas or ps tasks give worker_job_name '
                             'and ps_job_name')
        if replica_id >= num_replicas:
            raise InputError('replica_id must be less than num_replicas')
        self._num_clones = num_clones
        self._clone_on_cpu = clone_on_cpu
        self._replica_id = replica_id
        self._num_replicas = num_replicas
        self._num_ps_tasks = num_ps_tasks
        self._ps_device = '/job:' + ps_job_name if num_ps_tasks > 0 else ''
        self._worker_device = '/job:' + worker_job_name \
            if num_ps_tasks > 0 else ''

    num_clones = property(lambda self: self._num_clones)
    clone_on_cpu = property(lambda self: self._clone_on_cpu)
    replica_id = property(lambda self: self._replica_id)
    num_replicas = property(lambda self: self._num_replicas)
    num_ps_tasks = property(lambda self: self._num_ps_tasks)
    ps_device = property(lambda self: self._ps_device)
    worker_device = property(lambda self: self._worker_device)

    def caching_device(self):
        """Variables are cached where they are read when on ps tasks."""
        return (lambda op: op.device) if self._num_ps_tasks > 0 else None

    def _check_index(self, clone_index):
        if clone_index >= self._num_clones:
            raise InputError('clone_index must be less than num_clones')

    def clone_device(self, clone_index):
        """The device of clone `clone_index`'s ops."""
        self._check_index(clone_index)
        device = self._worker_device if self._num_ps_tasks > 0 else ''
        if self._clone_on_cpu:
            device += '/device:CPU:0'
        elif self._num_clones > 1:
            device += '/device:GPU:%d' % clone_index
        return device

    def clone_scope(self, clone_index):
        """'clone_i' with several clones, '' with one."""
        self._check_index(clone_index)
        return 'clone_%d' % clone_index if self._num_clones > 1 else ''

    def optimizer_device(self):
        """The device of the optimizer's ops."""
        if self._num_ps_tasks > 0 or self._num_clones > 0:
            return self._worker_device + '/device:CPU:0'
        return ''

    def inputs_device(self):
        """The device of the input pipeline."""
        return self._worker_device + '/device:CPU:0' \
            if self._num_ps_tasks > 0 else '/device:CPU:0'

    def variables_device(self):
        """The device (or device function) of the variables."""
        device = (self._ps_device if self._num_ps_tasks > 0 else '') + \
            '/device:CPU:0'
        if not self._num_ps_tasks:
            return device
        tasks = self._num_ps_tasks
        state = {'task': 0}

        def choose(op):
            if op.device:
                return op.device
            node_def = op if isinstance(op, tf.NodeDef) else op.node_def
            if node_def.op in ('Variable', 'VariableV2', 'VarHandleOp'):
                task = state['task']
                state['task'] = (task + 1) % tasks
                return '%s/task:%d' % (device, task)
            return op.device

        return choose
