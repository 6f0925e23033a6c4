"""Fine-tuning a published checkpoint on a new dataset (train_image_classifier).

`train(...)` builds the network in training mode on a tf.data pipeline
(Inception train preprocessing), restores everything but the logits from a
checkpoint (or resumes from the last checkpoint in `train_dir`), and trains
with the reference's recipe options: optimizer, learning-rate schedule,
weight decay, label smoothing, moving averages of the weights and the
choice of trainable scopes.  Batch-norm updates run with every step;
checkpoints are written every `save_every_steps` and at the end, with a
`labels.txt` beside them (the class names, one per line, in index order)
and a `model.json` (network, keyword arguments, input size, classes), which
`slimnets eval`, `classify` and `export` read.

Faults.  One training at a time writes a `train_dir` (`lock_train_dir`:
an advisory lock on LOCK_FILE holding the PID; a second is an InputError
naming it).  On SIGTERM (in the main thread) the running step ends, its
checkpoint is saved and `StoppedError` says so; the rerun resumes there.
A failed save (a full disk) is an OutputError naming the last good
checkpoint, which stays intact; a damaged record of the data is an
InputError naming the file and the record.  The last MAX_TO_KEEP
checkpoints are kept, across reruns.

One graph builder (`build_train_graph`) serves one process and a worker of
a cluster; with `cluster=` the variables live on parameter servers and
`slimnets.distributed` runs the session (see there).
"""

import collections
import contextlib
import glob
import logging
import os
import signal
import threading

import tensorflow.compat.v1 as tf
from tensorflow.python.util import deprecation  # pylint: disable=g-direct-tensorflow-import

from slimnets import checkpoints
from slimnets import datasets
from slimnets import distributed
from slimnets import fileio
from slimnets import models
from slimnets import nets_factory
from slimnets import quantize
from slimnets import slim
from slimnets.deployment import model_deploy
from slimnets.errors import ArgumentTypeError
from slimnets.errors import InputError
from slimnets.errors import OutputError
from slimnets.errors import StoppedError
from slimnets.train_config import DECAY_TYPES
from slimnets.train_config import DEFAULTS
from slimnets.train_config import OPTIMIZERS
from slimnets.train_config import TrainConfig

_log = logging.getLogger(__name__)

LABELS_FILE = models.LABELS_FILE
LOCK_FILE = '.train.lock'     # held by the training writing the folder
MAX_TO_KEEP = 3               # checkpoints kept, across reruns too

TrainResult = collections.namedtuple('TrainResult', [
    'checkpoint', 'first_step', 'last_step', 'losses', 'class_names',
    'resumed'])


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


def _logits_scope(network_scope_name):
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


def train(train_dir, data, num_classes=None, checkpoint=None, model=None,
          checkpoint_exclude_scopes=None, trainable_scopes=None,
          moving_average='auto', progress=True, cache_dir=None, split=None,
          num_clones=1, clone_on_cpu=False, ignore_missing_vars=False,
          cluster=None, replicas_to_aggregate=None, **options):
    """Fine-tunes (or trains) a MobileNet; resumes if `train_dir` has a run.

    Args:
      train_dir: where checkpoints (and labels.txt) are written.
      data: a class-folder tree or slim TFRecords (file, folder of shards,
        glob, research/slim dataset_dir), streamed through tf.data.
      num_classes: classes of the new head (default: the data's).
      checkpoint: the starting point (path or catalogue name); None with a
        `model` trains that network from scratch, None with no `model`
        fine-tunes the embedded default model (`models.DEFAULT_MODEL`).
      model: nets_factory or catalogue name (default inferred).
      checkpoint_exclude_scopes: scopes not restored; default the logits
        scope when the class counts differ.
      trainable_scopes: only these scopes train (default all).
      moving_average: use the checkpoint's shadows ('auto', True, False).
      split: research/slim split name in a dataset_dir (default train).
      num_clones, clone_on_cpu: research/slim model_deploy clones (one
        batch of `batch_size` each, on GPU i or all on the CPU; gradients
        summed, so N clones of batch B step as one of batch N x B).
      ignore_missing_vars: variables the checkpoint lacks keep their
        initial values (research/slim's flag) instead of failing.
      cluster: a worker's `slimnets.cluster.Cluster` (None: one process):
        the variables live on the ps tasks, this worker reads its shard of
        the data, and only the chief (worker 0) restores `checkpoint` and
        writes to `train_dir`.  Parameter servers run `distributed.serve`.
      replicas_to_aggregate: with a cluster, synchronous training: each
        global step averages this many workers' gradients (None:
        asynchronous, every worker's step is a global step).
      **options: TrainConfig fields (batch_size, max_steps, optimizer, ...).

    Returns:
      A TrainResult (a worker's losses are its own steps'; `checkpoint` is
      None on workers other than the chief).
    """
    unknown = set(options) - set(TrainConfig._fields)
    if unknown:
        raise ArgumentTypeError('unknown training options: %s' % ', '.join(
            sorted(unknown)))
    if cluster is not None and cluster.is_ps:
        raise InputError('a parameter server does not train: run '
                         'distributed.serve(cluster) for the ps tasks')
    config = DEFAULTS._replace(**options)
    source = datasets.training_source(data, split)
    class_names = source.class_names
    num_classes = num_classes or len(class_names)
    if len(class_names) > num_classes:
        raise InputError('the data has %d classes but num_classes '
                         'is %d' % (len(class_names), num_classes))
    if checkpoint is None and model is None:   # fine-tune the default
        checkpoint = models.DEFAULT_MODEL
        _log.info('no checkpoint or model named: fine-tuning starts from the '
                  'weights of %s', models.weights_name(checkpoint))
    # Any size: fine-tuning re-learns a QAT checkpoint's ranges.
    spec, prefix = models.model_spec(model, checkpoint, config.image_size,
                                     cache_dir=cache_dir, progress=progress,
                                     force_image_size=True)
    source_classes = spec.num_classes
    spec = spec._replace(num_classes=num_classes)
    config = config._replace(image_size=spec.image_size)
    check_resumable(train_dir, spec, class_names)
    chief = cluster is None or cluster.is_chief
    lock = contextlib.nullcontext()
    if chief:
        os.makedirs(train_dir, exist_ok=True)
        lock = lock_train_dir(train_dir)
        try:
            remove_partial_checkpoints(train_dir)
            fileio.write_bytes(os.path.join(train_dir, LABELS_FILE),
                               ('\n'.join(class_names) + '\n').encode('utf-8'))
            models.write_model_file(train_dir, spec, label_offset=0,
                                    source='slimnets train')
        except BaseException:
            lock.release()
            raise

    graph = tf.Graph()
    with lock, graph.as_default(), (
            tf.device(distributed.device_setter(cluster))
            if cluster else contextlib.nullcontext()):
        if config.seed is not None:
            tf.set_random_seed(config.seed)
        if cluster is None:
            deploy_config = model_deploy.DeploymentConfig(
                num_clones=num_clones, clone_on_cpu=clone_on_cpu)
        else:
            deploy_config = distributed.deployment_config(
                cluster, num_clones, clone_on_cpu)
        with tf.device(deploy_config.inputs_device()):
            batches = tf.data.make_one_shot_iterator(
                datasets.training_dataset(
                    source, config.image_size, config.batch_size,
                    config.seed, shard=cluster and cluster.task_index,
                    num_shards=cluster and cluster.num_workers))
        steps_per_epoch = 1 if config.learning_rate_decay_type == 'fixed' \
            else max(1, source.count() // (
                config.batch_size * num_clones * (replicas_to_aggregate or 1)))
        parts = build_train_graph(spec, config, batches.get_next,
                                  deploy_config, trainable_scopes,
                                  steps_per_epoch, replicas_to_aggregate)
        model_variables = tf.model_variables()
        if checkpoint_exclude_scopes is None:
            checkpoint_exclude_scopes = [] if source_classes == num_classes \
                else [_logits_scope(parts.network_scope)]
        latest = tf.train.latest_checkpoint(train_dir) if chief else None
        if cluster is not None:
            init_fn = checkpoints.init_fn(
                prefix, var_list=model_variables,
                moving_average=moving_average,
                exclude=checkpoint_exclude_scopes,
                allow_missing=ignore_missing_vars) \
                if prefix and chief and not latest else None
            server = distributed.start_server(cluster) \
                if not cluster.master else None
            first_step, last_step, losses = distributed.run_worker(
                cluster, cluster.master or server.target, parts.train_op,
                parts.total_loss, parts.global_step, config.max_steps,
                train_dir=train_dir, init_fn=init_fn,
                sync_optimizer=parts.sync_optimizer,
                save_every_steps=config.save_every_steps,
                summary_every_steps=config.log_every_n_steps,
                progress=progress)
            final = tf.train.latest_checkpoint(train_dir) if chief else None
            return TrainResult(final, first_step, last_step, losses,
                               class_names, bool(latest))
        saver = tf.train.Saver(max_to_keep=MAX_TO_KEEP)
        session_config = tf.ConfigProto(allow_soft_placement=True)
        with tf.Session(graph=graph, config=session_config) as sess:
            sess.run(tf.global_variables_initializer())
            if latest:
                saver.restore(sess, latest)
                # The checkpoints of the earlier run count towards
                # MAX_TO_KEEP (a fresh Saver knows none of them).
                saver.recover_last_checkpoints(tf.train.get_checkpoint_state(
                    train_dir).all_model_checkpoint_paths)
                _log.info('Resuming from %s', latest)
            elif prefix:
                checkpoints.restore(sess, prefix, var_list=model_variables,
                                    moving_average=moving_average,
                                    exclude=checkpoint_exclude_scopes,
                                    allow_missing=ignore_missing_vars)
            first_step = int(sess.run(parts.global_step))
            losses = _run_steps(sess, saver, train_dir, parts.train_op,
                                parts.total_loss, first_step, config,
                                progress, source)
            last_step = int(sess.run(parts.global_step))
            final = _save(sess, saver, train_dir, last_step)
    return TrainResult(final, first_step, last_step, losses, class_names,
                       bool(latest))


def lock_train_dir(train_dir):
    """This process's lock on `train_dir` (a `fileio.ProcessLock` on its
    LOCK_FILE), so that two trainings never write one folder.

    Raises:
      InputError: another process holds it, naming its PID.
    """
    lock, holder = fileio.try_process_lock(os.path.join(train_dir, LOCK_FILE))
    if lock is None:
        raise InputError(
            '%s is in use by another training (%s); wait for it to end, or '
            'give another --train-dir' % (train_dir, 'PID %d' % holder
                                          if holder else 'PID unknown'))
    return lock


@contextlib.contextmanager
def _signals_held():
    """Defers SIGINT and SIGTERM while the block runs, so that a save is
    never cut between writing a checkpoint and removing the one beyond
    MAX_TO_KEEP.  A signal that comes meanwhile is recorded and delivered
    to the handler that was in place once the block ends.

    Masking the signals would not do: a signal sent to the process reaches
    any thread that does not block it (TensorFlow runs many), and Python
    then runs its handler in the main thread all the same.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []

    def record(signal_number, frame):
        del frame
        received.append(signal_number)

    previous = {number: signal.signal(number, record)
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            if handler is not None:  # None: not installed from Python
                signal.signal(number, handler)
        for number in dict.fromkeys(received):
            signal.raise_signal(number)


def _save(sess, saver, train_dir, step):
    """Saves the checkpoint of `step`; returns its prefix.

    TensorFlow writes the files under temporary names and updates the
    `checkpoint` file last, so a failed save leaves the earlier checkpoints
    and that file as they were; its temporaries are removed here.

    Raises:
      OutputError: the save failed (a full disk, a read-only folder),
        naming the last good checkpoint.
    """
    try:
        with _signals_held():
            return saver.save(sess, os.path.join(train_dir, 'model.ckpt'),
                              global_step=step, write_meta_graph=False)
    except (tf.errors.OpError, OSError) as error:
        with contextlib.suppress(OSError):
            remove_partial_checkpoints(train_dir)
        last = tf.train.latest_checkpoint(train_dir)
        reason = datasets.tf_message(error) if isinstance(
            error, tf.errors.OpError) else (error.strerror or str(error))
        raise OutputError(
            'could not save the checkpoint of step %d in %s (%s); %s. Free '
            'some space or give another --train-dir' % (
                step, train_dir, reason,
                'the last good checkpoint, %s, is intact and a rerun resumes '
                'from it' % os.path.basename(last) if last else
                'no checkpoint was kept')) from None


class _StopSignals(object):
    """While active (in the main thread), SIGTERM only sets `received`, so
    that the step running ends and a checkpoint can be saved."""

    SIGNALS = (signal.SIGTERM,)

    def __init__(self):
        self.received = None
        self._previous = {}

    def _handle(self, signal_number, frame):
        del frame
        self.received = signal_number

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info):
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def remove_partial_checkpoints(train_dir):
    """Removes the `*.tempstate*` files a killed run's checkpoint writer
    left in `train_dir` (TensorFlow renames them into place when a save
    completes, so one left over is never part of a checkpoint)."""
    for path in glob.glob(os.path.join(train_dir, '*.tempstate*')):
        _log.info('Removing %s, left by an interrupted save', path)
        os.remove(path)


def check_resumable(train_dir, spec, class_names):
    """Refuses, before anything is written, to continue a run in
    `train_dir` with another network, input size or set of classes.

    Raises:
      InputError: naming what differs and the way out.
    """
    if not os.path.isdir(train_dir):
        return
    recorded = models.read_model_file(os.path.join(train_dir, 'model.ckpt'))
    differences = []
    if recorded is not None:
        for field in ('network', 'kwargs', 'image_size', 'num_classes'):
            old, new = getattr(recorded, field), getattr(spec, field)
            if old != new:
                differences.append('%s %s, now %s' % (field, old, new))
    labels_path = os.path.join(train_dir, LABELS_FILE)
    if os.path.isfile(labels_path):
        with open(labels_path) as handle:
            old_names = [line.strip() for line in handle if line.strip()]
        if old_names != list(class_names):
            differences.append('classes %s, now %s' % (
                ', '.join(old_names[:5]) + ('...' if len(old_names) > 5 else ''),
                ', '.join(class_names[:5]) + ('...' if len(class_names) > 5
                                              else '')))
    if differences:
        raise InputError('%s holds a run of another model (%s); give a new '
                         '--train-dir, or remove that folder to start over'
                         % (train_dir, '; '.join(differences)))


def _run_steps(sess, saver, train_dir, train_op, total_loss, first_step,
               config, progress, source=None):
    """Runs the steps after `first_step` up to `config.max_steps`, saving
    every `save_every_steps`; returns the losses.

    On SIGTERM the running step ends, the checkpoint of that step is saved
    and StoppedError says so (a rerun resumes there).  A damaged record or
    image of `source` is an InputError naming it.
    """
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    losses = []
    saved = first_step
    with tqdm(total=config.max_steps, initial=first_step, unit='step',
              disable=not progress, leave=False) as bar, \
            _StopSignals() as stop:
        for step in range(first_step + 1, config.max_steps + 1):
            try:
                _, loss = sess.run([train_op, total_loss])
            except (tf.errors.DataLossError,
                    tf.errors.InvalidArgumentError) as error:
                if source is None:
                    raise
                raise datasets.read_error(source, error) from None
            losses.append(float(loss))
            bar.update(1)
            bar.set_postfix(loss='%.4f' % loss)
            if step % config.log_every_n_steps == 0:
                _log.info('step %d: loss %.4f', step, loss)
            if step % config.save_every_steps == 0 and step < config.max_steps:
                _save(sess, saver, train_dir, step)
                saved = step
            if stop.received is not None and step < config.max_steps:
                prefix = _save(sess, saver, train_dir, step) \
                    if saved != step else \
                    os.path.join(train_dir, 'model.ckpt-%d' % step)
                raise StoppedError(
                    'stopped by %s at step %d: saved %s; run the same command '
                    'again to resume from there' % (
                        signal.Signals(stop.received).name, step, prefix),
                    stop.received)
    return losses
