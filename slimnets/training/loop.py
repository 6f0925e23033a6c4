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
`slimnets.training.distributed` runs the session (see there).
"""

import collections
import contextlib
import logging
import os
import signal

import tensorflow.compat.v1 as tf

from slimnets import checkpoints
from slimnets import datasets
from slimnets import fileio
from slimnets import labels as labels_lib
from slimnets.deployment import model_deploy
from slimnets.errors import ArgumentTypeError
from slimnets.errors import InputError
from slimnets.errors import StoppedError
from slimnets.inference import models
from slimnets.train_config import DEFAULTS
from slimnets.train_config import TrainConfig
from slimnets.training import distributed
from slimnets.training import graph as graph_lib
from slimnets.training import train_dir as train_dir_lib

__all__ = ['TrainResult', 'train']

_log = logging.getLogger(__name__)

TrainResult = collections.namedtuple('TrainResult', [
    'checkpoint', 'first_step', 'last_step', 'losses', 'class_names',
    'resumed'])


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
    train_dir = fileio.path_argument(train_dir, 'train_dir')
    data = fileio.path_argument(data, 'data')
    unknown = set(options) - set(TrainConfig._fields)
    if unknown:
        raise ArgumentTypeError('unknown training options: %s' % ', '.join(
            sorted(unknown)))
    if cluster is not None and cluster.is_ps:
        raise InputError('a parameter server does not train: run '
                         'distributed.serve(cluster) for the ps tasks')
    config = DEFAULTS._replace(**options)
    source = datasets.training_source(data, split)
    spec, prefix, source_classes, config = _model(
        source, num_classes, checkpoint, model, config, cache_dir, progress)
    train_dir_lib.check_resumable(train_dir, spec, source.class_names)
    chief = cluster is None or cluster.is_chief
    lock = _claim(train_dir, spec, source.class_names) if chief \
        else contextlib.nullcontext()
    graph = tf.Graph()
    with lock, graph.as_default(), (
            tf.device(distributed.device_setter(cluster))
            if cluster else contextlib.nullcontext()):
        parts = _graph(spec, config, source, cluster, num_clones,
                       clone_on_cpu, trainable_scopes, replicas_to_aggregate)
        if checkpoint_exclude_scopes is None:
            checkpoint_exclude_scopes = [] \
                if source_classes == spec.num_classes \
                else [graph_lib.logits_scope(parts.network_scope)]
        restore = dict(moving_average=moving_average,
                       exclude=checkpoint_exclude_scopes,
                       allow_missing=ignore_missing_vars)
        latest = tf.train.latest_checkpoint(train_dir) if chief else None
        if cluster is not None:
            steps = _steps_on_cluster(cluster, parts, config, train_dir,
                                      prefix if chief and not latest else None,
                                      restore, progress)
            final = tf.train.latest_checkpoint(train_dir) if chief else None
        else:
            steps, final = _steps_here(graph, parts, config, train_dir, latest,
                                       prefix, restore, progress, source)
    return TrainResult(final, *steps, source.class_names, bool(latest))


def _model(source, num_classes, checkpoint, model, config, cache_dir,
           progress):
    """(ModelSpec with the new head, checkpoint prefix, the checkpoint's
    class count, config with the resolved image size)."""
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
    return (spec, prefix, source_classes,
            config._replace(image_size=spec.image_size))


def _claim(train_dir, spec, class_names):
    """Locks `train_dir` for this training and writes its labels.txt and
    model.json; returns the lock."""
    os.makedirs(train_dir, exist_ok=True)
    lock = train_dir_lib.lock_train_dir(train_dir)
    try:
        train_dir_lib.remove_partial_checkpoints(train_dir)
        labels_lib.write_labels_file(train_dir, class_names)
        models.write_model_file(train_dir, spec, label_offset=0,
                                source='slimnets train')
    except BaseException:
        lock.release()
        raise
    return lock


def _graph(spec, config, source, cluster, num_clones, clone_on_cpu,
           trainable_scopes, replicas_to_aggregate):
    """The input pipeline and the training graph (a TrainGraph), in the
    default graph."""
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
    return graph_lib.build_train_graph(
        spec, config, batches.get_next, deploy_config, trainable_scopes,
        steps_per_epoch, replicas_to_aggregate)


def _steps_on_cluster(cluster, parts, config, train_dir, prefix, restore,
                      progress):
    """A worker's steps; the chief restores `prefix` first (None: nothing
    to restore).  Returns (first step, last step, losses)."""
    init_fn = checkpoints.init_fn(prefix, var_list=tf.model_variables(),
                                  **restore) if prefix else None
    server = distributed.start_server(cluster) if not cluster.master \
        else None
    return distributed.run_worker(
        cluster, cluster.master or server.target, parts.train_op,
        parts.total_loss, parts.global_step, config.max_steps,
        train_dir=train_dir, init_fn=init_fn,
        sync_optimizer=parts.sync_optimizer,
        save_every_steps=config.save_every_steps,
        summary_every_steps=config.log_every_n_steps, progress=progress)


def _steps_here(graph, parts, config, train_dir, latest, prefix, restore,
                progress, source):
    """One process's steps, resumed from `latest` or started from `prefix`.
    Returns ((first step, last step, losses), the final checkpoint)."""
    saver = tf.train.Saver(max_to_keep=train_dir_lib.MAX_TO_KEEP)
    session_config = tf.ConfigProto(allow_soft_placement=True)
    with tf.Session(graph=graph, config=session_config) as sess:
        sess.run(tf.global_variables_initializer())
        if latest:
            saver.restore(sess, latest)
            # The checkpoints of the earlier run count towards MAX_TO_KEEP
            # (a fresh Saver knows none of them).
            saver.recover_last_checkpoints(tf.train.get_checkpoint_state(
                train_dir).all_model_checkpoint_paths)
            _log.info('Resuming from %s', latest)
        elif prefix:
            checkpoints.restore(sess, prefix, var_list=tf.model_variables(),
                                **restore)
        first_step = int(sess.run(parts.global_step))
        losses = _run_steps(sess, saver, train_dir, parts.train_op,
                            parts.total_loss, first_step, config, progress,
                            source)
        last_step = int(sess.run(parts.global_step))
        final = train_dir_lib.save(sess, saver, train_dir, last_step)
    return (first_step, last_step, losses), final


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
            train_dir_lib.StopSignals() as stop:
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
                train_dir_lib.save(sess, saver, train_dir, step)
                saved = step
            if stop.received is not None and step < config.max_steps:
                prefix = train_dir_lib.save(sess, saver, train_dir, step) \
                    if saved != step else \
                    os.path.join(train_dir, 'model.ckpt-%d' % step)
                raise StoppedError(
                    'stopped by %s at step %d: saved %s; run the same command '
                    'again to resume from there' % (
                        signal.Signals(stop.received).name, step, prefix),
                    stop.received)
    return losses
