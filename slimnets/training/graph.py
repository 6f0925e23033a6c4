"""The training graph: one builder for one process and for a worker of a
cluster (train_image_classifier's network, loss, optimizer, learning-rate
schedule, moving averages and quantization-aware rewrite, with model_deploy
clones)."""

import collections
import contextlib

import tensorflow.compat.v1 as tf
from tensorflow.python.util import deprecation  # pylint: disable=g-direct-tensorflow-import

from slimnets import nets_factory
from slimnets import quantize
from slimnets import slim
from slimnets.deployment import model_deploy
from slimnets.errors import InputError
from slimnets.train_config import DECAY_TYPES
from slimnets.train_config import OPTIMIZERS

__all__ = ['TrainGraph', 'build_train_graph', 'logits_scope']

def _learning_rate(config, global_step, steps_per_epoch):
    decay_steps = max(1, int(steps_per_epoch * config.num_epochs_per_decay))
    if config.learning_rate_decay_type == 'fixed':
        return tf.constant(config.learning_rate, name='fixed_learning_rate')
    if config.learning_rate_decay_type == 'exponential':
        return tf.train.exponential_decay(
            config.learning_rate, global_step, decay_steps,
            config.learning_rate_decay_factor, staircase=True,
            name='exponential_decay_learning_rate')
    if config.learning_rate_decay_type == 'polynomial':
        return tf.train.polynomial_decay(
            config.learning_rate, global_step, decay_steps,
            config.end_learning_rate, power=1.0, cycle=False,
            name='polynomial_decay_learning_rate')
    raise InputError('learning_rate_decay_type must be one of %s, got %r'
                     % (', '.join(DECAY_TYPES),
                        config.learning_rate_decay_type))


def _optimizer(config, learning_rate):
    name = config.optimizer
    if name == 'adadelta':
        return tf.train.AdadeltaOptimizer(learning_rate, rho=config.adadelta_rho,
                                          epsilon=config.opt_epsilon)
    if name == 'adagrad':
        return tf.train.AdagradOptimizer(
            learning_rate,
            initial_accumulator_value=config.adagrad_initial_accumulator_value)
    if name == 'adam':
        return tf.train.AdamOptimizer(learning_rate, beta1=config.adam_beta1,
                                      beta2=config.adam_beta2,
                                      epsilon=config.opt_epsilon)
    if name == 'ftrl':
        return tf.train.FtrlOptimizer(learning_rate)
    if name == 'momentum':
        return tf.train.MomentumOptimizer(learning_rate, config.momentum,
                                          name='Momentum')
    if name == 'sgd':
        return tf.train.GradientDescentOptimizer(learning_rate)
    if name == 'rmsprop':
        return tf.train.RMSPropOptimizer(learning_rate, decay=config.rmsprop_decay,
                                         momentum=config.rmsprop_momentum,
                                         epsilon=config.opt_epsilon)
    raise InputError('optimizer must be one of %s, got %r'
                     % (', '.join(OPTIMIZERS), name))


def _trainable_variables(trainable_scopes):
    if not trainable_scopes:
        return tf.trainable_variables()
    selected = []
    for scope in trainable_scopes:
        selected.extend(tf.trainable_variables(scope.strip()))
    if not selected:
        raise InputError('no trainable variables under %s' % trainable_scopes)
    return selected


def _build(spec, images, config):
    """The network in training mode under its arg scope; returns logits.

    `batch_norm_decay` replaces the arg scope's (0.9997 for v1 suits long
    runs; short fine-tuning runs need the moving statistics to follow);
    `fine_tune_batch_norm=False` keeps batch norm (and dropout) in inference
    mode, as DeepLab does for small batches.
    """
    arg_scope = nets_factory.arg_scopes_map[spec.network](
        weight_decay=config.weight_decay)
    batch_norm_args = {}
    if config.batch_norm_decay is not None:
        batch_norm_args['decay'] = config.batch_norm_decay
    with slim.arg_scope(arg_scope), slim.arg_scope([slim.batch_norm],
                                                   **batch_norm_args):
        logits, _ = nets_factory.networks_map[spec.network](
            images, num_classes=spec.num_classes,
            is_training=config.fine_tune_batch_norm, **spec.kwargs)
    return logits


def logits_scope(network_scope_name):
    return network_scope_name + '/Logits'


TrainGraph = collections.namedtuple('TrainGraph', [
    'global_step', 'train_op', 'total_loss', 'sync_optimizer',
    'network_scope'])


def build_train_graph(spec, config, inputs_fn, deploy_config,
                      trainable_scopes=None, steps_per_epoch=1,
                      replicas_to_aggregate=None):
    """The training graph, in the default graph (one process or a worker).

    Args:
      spec: the ModelSpec (its num_classes is the new head's).
      config: a TrainConfig.
      inputs_fn: called once per clone, returns (images [B, S, S, 3]
        float32, labels [B] int64).
      deploy_config: a model_deploy.DeploymentConfig.
      trainable_scopes: only these scopes train (default all).
      steps_per_epoch: global steps per epoch (the decay schedules).
      replicas_to_aggregate: gradients one synchronous step averages over
        the `deploy_config.num_replicas` workers (a
        tf.train.SyncReplicasOptimizer, which also applies the moving
        averages); None: every step applies its own gradients.

    Returns:
      A TrainGraph: global_step, train_op (one step), total_loss, the
      sync_optimizer (or None) and the network's scope name.
    """
    with tf.device(deploy_config.variables_device()):
        global_step = tf.train.get_or_create_global_step()

    def clone_fn():
        """One clone: a batch, the network, its loss (LOSSES)."""
        images, labels = inputs_fn()
        logits = _build(spec, images, config)
        tf.losses.softmax_cross_entropy(
            tf.one_hot(labels, spec.num_classes), logits,
            label_smoothing=config.label_smoothing)
        return logits

    clones = model_deploy.create_clones(deploy_config, clone_fn)
    if config.quantize_delay is not None and config.quantize_delay >= 0:
        # train_image_classifier's --quantize_delay, at its place: every
        # clone built, no gradient yet.
        quantize.create_training_graph(tf.get_default_graph(),
                                       config.quantize_delay)
    network_scope = tf.model_variables()[0].op.name.split('/')[0]
    averages = sync_optimizer = None
    if config.moving_average_decay:
        averages = tf.train.ExponentialMovingAverage(
            config.moving_average_decay, global_step)
    # SyncReplicasOptimizer and its queue runner log deprecation notices.
    with tf.device(deploy_config.optimizer_device()), (
            deprecation.silence() if replicas_to_aggregate
            else contextlib.nullcontext()):
        learning_rate = _learning_rate(config, global_step, steps_per_epoch)
        optimizer = _optimizer(config, learning_rate)
        if replicas_to_aggregate:
            # train_image_classifier's --sync_replicas: the chief's queue
            # runner averages the gradients (and applies the moving
            # averages) once `replicas_to_aggregate` have arrived.
            optimizer = sync_optimizer = tf.train.SyncReplicasOptimizer(
                optimizer, replicas_to_aggregate,
                total_num_replicas=deploy_config.num_replicas,
                variable_averages=averages,
                variables_to_average=tf.model_variables() if averages
                else None)
        # model_deploy's loss: each clone's loss / clones, the
        # regularization once, gradients summed across clones.
        total_loss, gradients = model_deploy.optimize_clones(
            clones, optimizer,
            var_list=_trainable_variables(trainable_scopes))
        update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS,
                                       clones[0].scope)
        train_op = tf.group(*update_ops + [optimizer.apply_gradients(
            gradients, global_step=global_step)])
    if averages is not None and sync_optimizer is None:
        with tf.control_dependencies([train_op]):
            train_op = averages.apply(tf.model_variables())
    tf.summary.scalar('total_loss', total_loss)
    tf.summary.scalar('learning_rate', learning_rate)
    return TrainGraph(global_step, train_op, total_loss, sync_optimizer,
                      network_scope)
