"""research/slim's train_image_classifier.py, flags as they were.

    python -m slimnets.legacy.train_image_classifier \\
        --train_dir=/tmp/train --dataset_name=flowers \\
        --dataset_split_name=train --dataset_dir=/tmp/flowers \\
        --model_name=mobilenet_v1_025 --checkpoint_path=/tmp/ckpt/model.ckpt \\
        --checkpoint_exclude_scopes=MobilenetV1/Logits \\
        --max_number_of_steps=1000 --batch_size=32 --learning_rate=0.01

A translation onto `slimnets.training.train` (what `slimnets train` runs),
in one process or as a task of a cluster (see `slimnets.legacy` for the
cluster flags; a ps task runs `slimnets.training.distributed.serve`).
`--max_number_of_steps` unset trains until interrupted, as the reference
does; checkpoints are written every 100 steps and at the end (the
`--save_*_secs` flags are accepted and moot).
"""

import logging
import sys

from slimnets import legacy
from slimnets import training
from slimnets.errors import UsageError
from slimnets.train_config import DECAY_TYPES
from slimnets.train_config import DEFAULTS
from slimnets.train_config import OPTIMIZERS
from slimnets.training import distributed

__all__ = [
    'PROGRAM', 'UNTIL_INTERRUPTED', 'build_parser', 'translate', 'main',
]

_log = logging.getLogger(__name__)

PROGRAM = 'train_image_classifier'
UNTIL_INTERRUPTED = sys.maxsize  # max_number_of_steps unset

# Reference flags with no slimnets counterpart: refused unless at these
# (the reference's) defaults.
_UNSUPPORTED = {'warmup_epochs': 0.0, 'labels_offset': 0,
                'use_grayscale': False, 'ftrl_learning_rate_power': -0.5,
                'ftrl_initial_accumulator_value': 0.1, 'ftrl_l1': 0.0,
                'ftrl_l2': 0.0}
_MOOT = ('num_readers', 'num_preprocessing_threads', 'save_interval_secs',
         'save_summaries_secs')
# Flags that are TrainConfig fields of the same name.
_SAME_NAME = ('batch_size', 'weight_decay', 'optimizer', 'adadelta_rho',
              'adagrad_initial_accumulator_value', 'adam_beta1',
              'adam_beta2', 'opt_epsilon', 'momentum', 'rmsprop_momentum',
              'rmsprop_decay', 'learning_rate_decay_type', 'learning_rate',
              'end_learning_rate', 'label_smoothing',
              'learning_rate_decay_factor', 'num_epochs_per_decay',
              'moving_average_decay', 'log_every_n_steps')


def build_parser():
    parser = legacy.Parser(
        prog=PROGRAM, description='research/slim train_image_classifier.py '
        'flags, run by slimnets.')
    add = parser.add_argument
    add('--train_dir', default='/tmp/tfmodel/',
        help='where checkpoints and event logs are written')
    add('--warmup_epochs', type=float, default=0.0,
        help='not supported (must be 0)')
    add('--num_clones', type=int, default=1,
        help='model_deploy clones on this machine')
    parser.add_bool('clone_on_cpu', False, 'place every clone on the CPU')
    legacy.add_cluster_flags(parser)
    add('--num_readers', type=int, default=4, help='accepted; tf.data tunes '
        'its own parallelism')
    add('--num_preprocessing_threads', type=int, default=4,
        help='accepted; tf.data tunes its own parallelism')
    add('--log_every_n_steps', type=int, default=DEFAULTS.log_every_n_steps)
    add('--save_summaries_secs', type=int, default=600,
        help='accepted; no summaries are written')
    add('--save_interval_secs', type=int, default=600,
        help='accepted; checkpoints are written every 100 steps and at the '
             'end')
    add('--weight_decay', type=float, default=DEFAULTS.weight_decay)
    add('--optimizer', default=DEFAULTS.optimizer, choices=OPTIMIZERS)
    add('--adadelta_rho', type=float, default=DEFAULTS.adadelta_rho)
    add('--adagrad_initial_accumulator_value', type=float,
        default=DEFAULTS.adagrad_initial_accumulator_value)
    add('--adam_beta1', type=float, default=DEFAULTS.adam_beta1)
    add('--adam_beta2', type=float, default=DEFAULTS.adam_beta2)
    add('--opt_epsilon', type=float, default=DEFAULTS.opt_epsilon)
    add('--ftrl_learning_rate_power', type=float, default=-0.5,
        help='only the default is supported')
    add('--ftrl_initial_accumulator_value', type=float, default=0.1,
        help='only the default is supported')
    add('--ftrl_l1', type=float, default=0.0,
        help='only the default is supported')
    add('--ftrl_l2', type=float, default=0.0,
        help='only the default is supported')
    add('--momentum', type=float, default=DEFAULTS.momentum)
    add('--rmsprop_momentum', type=float, default=DEFAULTS.rmsprop_momentum)
    add('--rmsprop_decay', type=float, default=DEFAULTS.rmsprop_decay)
    add('--quantize_delay', type=int, default=-1,
        help='steps before quantization-aware training starts; -1: none')
    add('--learning_rate_decay_type', default=DEFAULTS.learning_rate_decay_type,
        choices=DECAY_TYPES)
    add('--learning_rate', type=float, default=DEFAULTS.learning_rate)
    add('--end_learning_rate', type=float, default=DEFAULTS.end_learning_rate)
    add('--label_smoothing', type=float, default=DEFAULTS.label_smoothing)
    add('--learning_rate_decay_factor', type=float,
        default=DEFAULTS.learning_rate_decay_factor)
    add('--num_epochs_per_decay', type=float,
        default=DEFAULTS.num_epochs_per_decay)
    add('--moving_average_decay', type=legacy.optional(float), default=None)
    legacy.add_dataset_and_model_flags(parser, split='train')
    add('--batch_size', type=int, default=DEFAULTS.batch_size)
    add('--train_image_size', type=legacy.optional(int), default=None)
    add('--max_number_of_steps', type=legacy.optional(int), default=None)
    parser.add_bool('use_grayscale', False, 'not supported (must be false)')
    add('--checkpoint_path', type=legacy.optional(str), default=None,
        help='a checkpoint prefix or a folder (its latest checkpoint)')
    add('--checkpoint_exclude_scopes', type=legacy.optional(str),
        default=None, help='comma-separated scopes not restored')
    add('--trainable_scopes', type=legacy.optional(str), default=None,
        help='comma-separated scopes to train (default all)')
    parser.add_bool('ignore_missing_vars', False,
                    "leave variables the checkpoint lacks at their initial "
                    "values")
    return parser


def _scopes(text):
    return [s.strip() for s in text.split(',') if s.strip()] if text \
        else None


def translate(args):
    """The `training.train` keyword arguments of parsed flags.

    Raises:
      UsageError: inconsistent cluster flags or an unsupported flag.
    """
    role, replicas = legacy.cluster_role(args)
    legacy.refuse_unless_default(args, _UNSUPPORTED)
    legacy.check_preprocessing(args.preprocessing_name)
    legacy.note_moot(args, _MOOT)
    if not args.dataset_dir:
        raise UsageError('you must supply the dataset directory with '
                         '--dataset_dir')
    options = {name: getattr(args, name) for name in _SAME_NAME}
    options['image_size'] = args.train_image_size
    options['max_steps'] = (UNTIL_INTERRUPTED if args.max_number_of_steps
                            is None else args.max_number_of_steps)
    if args.max_number_of_steps is None:
        _log.info('no --max_number_of_steps: training until interrupted '
                  '(Ctrl-C; a checkpoint is written every 100 steps)')
    options['quantize_delay'] = (args.quantize_delay
                                 if args.quantize_delay >= 0 else None)
    return dict(
        train_dir=args.train_dir, data=args.dataset_dir,
        split=args.dataset_split_name,
        num_classes=legacy.dataset_classes(args.dataset_name),
        checkpoint=legacy.checkpoint_prefix(args.checkpoint_path),
        model=args.model_name,
        checkpoint_exclude_scopes=_scopes(args.checkpoint_exclude_scopes),
        trainable_scopes=_scopes(args.trainable_scopes),
        ignore_missing_vars=args.ignore_missing_vars,
        num_clones=args.num_clones, clone_on_cpu=args.clone_on_cpu,
        cluster=role, replicas_to_aggregate=replicas, progress=False,
        **options)


def _train(args):
    options = translate(args)
    role = options['cluster']
    if role is not None and role.is_ps:
        finished = distributed.serve(role)
        print('%s: all %d workers are done' % (role.describe(),
                                               len(finished)))
        return
    result = training.train(**options)
    if result.losses:
        print('steps %d..%d: final loss %.4f' % (
            result.first_step, result.last_step, result.losses[-1]))
    if result.checkpoint:
        print('checkpoint: %s' % result.checkpoint)


def main(argv=None):
    """Runs the script on `argv` (default sys.argv[1:]); the exit status."""
    return legacy.run(PROGRAM, build_parser(), _train, argv)


if __name__ == '__main__':
    sys.exit(main())
