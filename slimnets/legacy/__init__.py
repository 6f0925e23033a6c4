"""research/slim's scripts with their own flags, over slimnets' code.

`python -m slimnets.legacy.train_image_classifier`, `...eval_image_classifier`
and `...export_inference_graph` (and the console scripts of those names)
take the reference scripts' flags as they are, so a shell script written
for research/slim runs by changing only the program name.  Each script is a
thin translation onto `slimnets.training.train`, `slimnets.inference.evaluation.evaluate`
and the inference graph of `slimnets.optimize`; nothing is implemented twice.

Flags are parsed the way absl parses them: `--flag=value`, `--flag value`,
`-flag=value`, and for booleans `--flag`, `--noflag` and `--flag=false`.
`train_image_classifier` trains across processes and machines as the
reference did: `--master grpc://H:P --task K --num_ps_tasks N
--worker_replicas W [--sync_replicas --replicas_to_aggregate R]` with the
servers started elsewhere (the session runs on `--master`; the variables
on `/job:ps`, the worker's ops on `/job:worker/task:K`), or, starting its
own server, `--ps_hosts --worker_hosts --job_name --task_index` (and
TF_CONFIG), as `slimnets train` does (`slimnets.cluster`,
`slimnets.training.distributed`).  `eval_image_classifier` evaluates in one
process: its `--master` must stay empty.  Flags with no slimnets counterpart are
refused when set away from their default, never silently ignored, except
the tuning knobs tf.data and the step-based checkpointing make moot
(`--num_readers`, `--num_preprocessing_threads`, `--save_interval_secs`,
`--save_summaries_secs`), which are accepted and logged.
"""

import argparse
import logging
import os
import sys

import tensorflow.compat.v1 as tf

from slimnets import cli
from slimnets import cluster
from slimnets import tflog
from slimnets.errors import SlimnetsError
from slimnets.errors import UsageError

__all__ = [
    'cli', 'cluster', 'tflog', 'SlimnetsError', 'UsageError',
    'DATASET_CLASSES', 'parse_bool', 'optional', 'Parser',
    'add_dataset_and_model_flags', 'add_cluster_flags', 'cluster_role',
    'check_single_process', 'refuse_unless_default', 'note_moot',
    'check_preprocessing', 'dataset_classes', 'checkpoint_prefix', 'run',
]

_log = logging.getLogger(__name__)

# research/slim's datasets/dataset_factory: the class count of each dataset
# (ImageNet's includes the background class 0).  The TFRecord layouts are
# read by `slimnets.datasets` whatever the name.
DATASET_CLASSES = {'imagenet': 1001, 'flowers': 5, 'cifar10': 10,
                   'mnist': 10}

_TRUE = ('true', 't', '1', 'yes', 'y')
_FALSE = ('false', 'f', '0', 'no', 'n')


def parse_bool(text):
    """absl's boolean values: true/false, t/f, 1/0 (any case)."""
    lowered = str(text).lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError('%r is not a boolean (true or false)'
                                     % (text,))


parse_bool.__name__ = 'boolean'  # argparse names the type in its message


def optional(kind):
    """A value that may be given as 'None' (absl prints unset flags so)."""
    def convert(text):
        return None if text in ('None', '') else kind(text)
    convert.__name__ = kind.__name__
    return convert


class Parser(cli.ArgumentParser):
    """argparse with absl's spellings (`--noflag`, `-flag=value`) and
    slimnets' one-line usage errors (exit status 2).  absl's logging
    flags, common in the reference's documented lines, are accepted (the
    log goes to stderr in any case)."""

    def __init__(self, **kwargs):
        kwargs.setdefault('allow_abbrev', False)  # absl takes whole names
        super().__init__(**kwargs)
        for name in ('alsologtostderr', 'logtostderr'):
            self.add_bool(name, False, 'accepted (absl logging; the log '
                          'goes to stderr)')

    def error(self, message):
        self.exit(2, 'slimnets %s: error: %s (see %s --help)\n' % (
            self.prog, message, self.prog))

    def add_bool(self, name, default, help_text):
        """`--name`, `--name=true|false` and `--noname`."""
        self.add_argument('--' + name, nargs='?', const=True, default=default,
                          type=parse_bool, metavar='BOOL', help=help_text)
        self.add_argument('--no' + name, dest=name, action='store_false',
                          help=argparse.SUPPRESS)

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        # absl takes one dash as well as two ('-flag=value'; not '-0.5').
        args = ['-' + a if len(a) > 2 and a[0] == '-' and a[1].isalpha()
                else a for a in args]
        return super().parse_args(args, namespace)


def add_dataset_and_model_flags(parser, split):
    """research/slim's dataset and network flags, shared by the training and
    evaluation scripts (`split`: the --dataset_split_name default)."""
    add = parser.add_argument
    add('--dataset_name', default='imagenet',
        help='imagenet, flowers, cifar10 or mnist (its class count)')
    add('--dataset_split_name', default=split)
    add('--dataset_dir', default=None, help='the TFRecord shards')
    add('--labels_offset', type=int, default=0,
        help='not supported (must be 0)')
    add('--model_name', default='inception_v3',
        help='a nets_factory MobileNet name, e.g. mobilenet_v1_025')
    add('--preprocessing_name', type=optional(str), default=None,
        help='Inception-style for every MobileNet; only inception* and '
             'mobilenet* names are accepted')


def add_cluster_flags(parser, worker_flags=True):
    """The reference's multi-process flags; with `worker_flags` (training)
    also those of TensorFlow's distributed examples (`--ps_hosts`,
    `--worker_hosts`, `--job_name`, `--task_index`)."""
    if not worker_flags:
        parser.add_argument('--master', default='',
                            help='must be empty: evaluation runs in this '
                                 'process')
        return
    add = parser.add_argument
    add('--master', default='', help='grpc://host:port of this worker\'s '
        'server, started elsewhere (empty: one process)')
    add('--task', type=int, default=0, help='this worker\'s index')
    add('--num_ps_tasks', type=int, default=0,
        help='parameter servers holding the variables (0: one process)')
    add('--worker_replicas', type=int, default=1, help='workers')
    parser.add_bool('sync_replicas', False, 'synchronous steps '
                    '(SyncReplicasOptimizer)')
    add('--replicas_to_aggregate', type=int, default=1,
        help='gradients per synchronous step')
    add('--ps_hosts', default=None, help='H:P,... start this task\'s server '
        'here (with --worker_hosts and --job_name)')
    add('--worker_hosts', default=None, help='H:P,... (the first is the '
        'chief)')
    add('--job_name', default=None, choices=cluster.JOBS)
    add('--task_index', type=int, default=None,
        help='this task\'s index in its job (default --task)')


def cluster_role(args):
    """(the Cluster role of the cluster flags or TF_CONFIG, or None; the
    gradients one synchronous step aggregates, or None).

    Raises:
      UsageError: inconsistent cluster flags.
    """
    hosts = (args.ps_hosts, args.worker_hosts, args.job_name)
    if any(hosts) or args.task_index is not None:
        if args.master:
            raise UsageError('give either --master (servers started '
                             'elsewhere) or --ps_hosts/--worker_hosts/'
                             '--job_name (a server started here), not both')
        role = cluster.from_hosts(*hosts, task_index=args.task if
                                  args.task_index is None else args.task_index)
        for flag, given, actual in (
                ('num_ps_tasks', args.num_ps_tasks, role.num_ps_tasks),
                ('worker_replicas', args.worker_replicas, role.num_workers)):
            if given not in (actual, 0 if flag == 'num_ps_tasks' else 1):
                raise UsageError('--%s=%d but the host lists name %d; leave '
                                 'it out' % (flag, given, actual))
    else:
        role = cluster.from_master(args.master, args.task, args.num_ps_tasks,
                                   args.worker_replicas) or cluster.resolve()
    return role, cluster.replicas_to_aggregate(role, args.sync_replicas,
                                               args.replicas_to_aggregate)


def check_single_process(args):
    """Refuses a --master for evaluation, which runs in this process.

    Raises:
      UsageError: naming the flag.
    """
    if args.master:
        raise UsageError(
            'distributed evaluation is not supported (--master=%s); '
            'evaluate in this process, or in shards with `slimnets eval '
            '--shard K --num-shards N`' % args.master)


def refuse_unless_default(args, defaults):
    """Refuses flags set away from their defaults ({name: default})."""
    given = ['--%s=%s' % (name, getattr(args, name))
             for name, default in defaults.items()
             if getattr(args, name) != default]
    if given:
        raise UsageError('%s %s yet; leave %s at the reference default' % (
            ', '.join(given), 'is not supported' if len(given) == 1
            else 'are not supported', 'it' if len(given) == 1 else 'them'))


def note_moot(args, names):
    """Logs flags accepted for compatibility that change nothing here."""
    for name in names:
        _log.debug('--%s=%s accepted; tf.data and step-based checkpoints '
                   'make it moot', name, getattr(args, name))


def check_preprocessing(name):
    """Every MobileNet uses Inception preprocessing in the reference's
    preprocessing_factory; other families' names are refused."""
    if name is not None and not name.startswith(('inception', 'mobilenet')):
        raise UsageError('--preprocessing_name=%s is not supported: every '
                         'MobileNet uses Inception preprocessing (leave it '
                         'unset)' % name)


def dataset_classes(name):
    """The class count of a research/slim dataset name.

    Raises:
      UsageError: an unknown dataset name.
    """
    if name not in DATASET_CLASSES:
        raise UsageError('unknown --dataset_name %r; choose from %s' % (
            name, ', '.join(sorted(DATASET_CLASSES))))
    return DATASET_CLASSES[name]


def checkpoint_prefix(path):
    """research/slim's checkpoint_path: a prefix, or a folder whose latest
    checkpoint is used.

    Raises:
      UsageError: a folder with no checkpoint.
    """
    if path and os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise UsageError('no checkpoint in %s (give --checkpoint_path a '
                             'checkpoint prefix or a folder holding one)'
                             % path)
        return latest
    return path


def run(program, parser, body, argv=None):
    """Parses `argv`, runs `body(args)`; returns the exit status (0, 1 for
    a failure, 2 for a usage error), printing a failure on one line."""
    args = parser.parse_args(argv)
    cli.show_library_log(False)
    try:
        with tflog.filtered_stderr(tflog.level_from_environment(
                verbose=False)):
            body(args)
    except (SlimnetsError, KeyboardInterrupt) as error:
        print('slimnets %s: error: %s' % (
            program, cli.one_line(error)),
            file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1
    return 0
