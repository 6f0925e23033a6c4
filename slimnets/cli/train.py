"""`slimnets train`: fine-tune a checkpoint on a new dataset (over
`slimnets.training`), in one process or across a cluster
(`slimnets.training.distributed` serves the parameter servers)."""

import os

from slimnets import cluster
from slimnets import registry
from slimnets import train_config
from slimnets.cli import arguments

__all__ = ['add_parser', 'run']

# The type (and so the valid range) of each fine-tuning option; the rest
# are positive numbers.
_TRAIN_OPTION_TYPES = {
    'optimizer': str, 'learning_rate_decay_type': str,
    'batch_size': arguments.positive_int, 'max_steps': arguments.positive_int,
    'save_every_steps': arguments.positive_int,
    'log_every_n_steps': arguments.positive_int,
    'image_size': arguments.image_size, 'seed': arguments.non_negative_int,
    'weight_decay': arguments.non_negative_float,
    'label_smoothing': arguments.unit_interval,
    'learning_rate_decay_factor': arguments.fraction,
    'moving_average_decay': arguments.fraction,
    'batch_norm_decay': arguments.fraction,
    'momentum': arguments.unit_interval,
    'rmsprop_momentum': arguments.unit_interval,
    'rmsprop_decay': arguments.fraction,
    'adam_beta1': arguments.unit_interval,
    'adam_beta2': arguments.unit_interval,
    'adadelta_rho': arguments.fraction,
    'end_learning_rate': arguments.non_negative_float,
    'quantize_delay': int,  # negative: no quantization (the reference's -1)
}


def add_parser(commands):
    """Adds `train` to `commands`."""
    train = arguments.add_command(
        commands, 'train', help='fine-tune a checkpoint on a new dataset',
        description='Fine-tune (train_image_classifier): restore everything '
                    'but the logits, train with batch-norm updates, save '
                    'periodic checkpoints to --train-dir and resume from '
                    'them when run again.')
    train.add_argument('--train-dir', required=True,
                       type=arguments.writable_place)
    train.add_argument('--data', required=True,
                       help='class-folder tree, TFRecord file, folder of '
                            'shards or glob, or a research/slim dataset_dir')
    train.add_argument('--split', help='research/slim split in a dataset_dir '
                       '(default: train when it holds several)')
    train.add_argument('--checkpoint', help='starting checkpoint (path or '
                       'catalogue name); default: with --model NETWORK, '
                       'from scratch, else the embedded %s' % (
                           registry.DEFAULT_MODEL))
    train.add_argument('--model', help='nets_factory or catalogue name '
                       '(default: inferred from the checkpoint)')
    train.add_argument('--num-classes', type=arguments.positive_int,
                       help='classes of the new head (default: the data\'s)')
    train.add_argument('--checkpoint-exclude-scopes',
                       help='comma list of scopes not restored (default: the '
                            'logits when the classes differ)')
    train.add_argument('--trainable-scopes', help='comma list; default all')
    train.add_argument('--freeze-batch-norm', action='store_true',
                       help='keep batch norm (and dropout) in inference mode')
    train.add_argument('--num-clones', type=arguments.positive_int, default=1,
                       help='model_deploy clones, a batch each, gradients '
                            'summed (default %(default)s)')
    train.add_argument('--clone-on-cpu', action='store_true',
                       help='place every clone on the CPU (else GPU i)')
    _add_training_options(train)
    train.add_argument('--no-progress', action='store_true')
    arguments.add_cluster_arguments(train)
    arguments.add_cache_argument(train)
    train.set_defaults(handler=run)


def _add_training_options(train):
    """One option per field of slimnets.train_config.TrainConfig."""
    for name, value in train_config.DEFAULTS._asdict().items():
        if name == 'fine_tune_batch_norm':
            continue
        kind = _TRAIN_OPTION_TYPES.get(name, arguments.positive_float)
        choices = {'optimizer': train_config.OPTIMIZERS,
                   'learning_rate_decay_type': train_config.DECAY_TYPES}.get(name)
        # --quantize_delay: train_image_classifier's own spelling too.
        flags = ['--' + name.replace('_', '-')] + (
            ['--' + name] if name == 'quantize_delay' else [])
        train.add_argument(*flags, type=kind, choices=choices, dest=name,
                           help='default %s' % (value,))


def _cluster_role(args):
    """This process's place in a cluster (flags, else TF_CONFIG; None for
    one process) and the gradients one synchronous step aggregates."""
    role = cluster.resolve(args.ps_hosts, args.worker_hosts, args.job_name,
                           args.task_index)
    return role, cluster.replicas_to_aggregate(role, args.sync_replicas,
                                               args.replicas_to_aggregate)


def run(args):
    """Serves as a parameter server, or trains and prints the losses."""
    role, replicas = _cluster_role(args)   # usage errors before TensorFlow
    if role is not None and role.is_ps:
        from slimnets.training import distributed  # pylint: disable=import-outside-toplevel
        finished = distributed.serve(role)
        print('%s: all %d workers are done (%s)' % (
            role.describe(), len(finished),
            ', '.join(str(i) for i in finished)))
        return
    from slimnets import training  # pylint: disable=import-outside-toplevel
    from slimnets.inference import models  # pylint: disable=import-outside-toplevel
    if args.checkpoint is None and args.model is None and not os.path.isfile(
            os.path.join(args.train_dir, 'checkpoint')):
        print('no --checkpoint or --model: fine-tuning starts from the '
              'weights of %s' % models.weights_name(models.DEFAULT_MODEL))
    options = {name: getattr(args, name) for name in train_config.TrainConfig._fields
               if getattr(args, name, None) is not None}
    options['fine_tune_batch_norm'] = not args.freeze_batch_norm
    exclude = args.checkpoint_exclude_scopes.split(',') \
        if args.checkpoint_exclude_scopes else None
    trainable = args.trainable_scopes.split(',') if args.trainable_scopes \
        else None
    result = training.train(
        args.train_dir, args.data, num_classes=args.num_classes,
        checkpoint=args.checkpoint, model=args.model,
        checkpoint_exclude_scopes=exclude, trainable_scopes=trainable,
        progress=not args.no_progress, cache_dir=args.cache_dir,
        split=args.split, num_clones=args.num_clones,
        clone_on_cpu=args.clone_on_cpu, cluster=role,
        replicas_to_aggregate=replicas, **options)
    _print_result(result, role)


def _print_result(result, role):
    if result.resumed:
        print('resumed at step %d' % result.first_step)
    if result.losses:
        head = result.losses[:10]
        tail = result.losses[-10:]
        print('steps %d..%d: loss %.4f (first %d) -> %.4f (last %d)' % (
            result.first_step, result.last_step, sum(head) / len(head),
            len(head), sum(tail) / len(tail), len(tail)))
    print('classes: %s' % ', '.join(result.class_names))
    if role is not None:
        print('%s: global step %d' % (role.describe(), result.last_step))
    if result.checkpoint:
        print('checkpoint: %s' % result.checkpoint)
