"""The command line's argument types, range checks and shared options.

Every numeric option is range-checked where it is parsed: a bad value is a
usage error (one line, exit status 2) before any work starts.  The option
groups several commands share (the model, the cache, the runtime, the
cluster) are added by the `add_*` functions here, and `add_command` gives
every command the common --verbose and --debug.
"""

import argparse
import os
import re

from slimnets import cluster
from slimnets import graph_format
from slimnets import images as image_files
from slimnets import registry
from slimnets.errors import SlimnetsError
from slimnets.errors import UsageError

__all__ = [
    'MAX_IMAGE_SIZE', 'MIN_IMAGE_SIZE', 'ArgumentParser', 'CommandError',
    'add_cache_argument', 'add_cluster_arguments', 'add_command',
    'add_max_pixels', 'add_model_arguments', 'add_runtime_argument',
    'common_options', 'export_batch_size', 'fraction', 'hosts',
    'image_size', 'non_negative_float', 'non_negative_int', 'positive_float',
    'positive_int', 'unit_interval', 'url', 'validation_fraction',
    'writable_file', 'writable_place',
]

MIN_IMAGE_SIZE = graph_format.MIN_IMAGE_SIZE
MAX_IMAGE_SIZE = graph_format.MAX_IMAGE_SIZE


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (exit status 2)."""

    def error(self, message):
        self.exit(2, '%s: error: %s (see %s --help)\n' % (
            self.prog, message, self.prog))


class CommandError(SlimnetsError):
    """A user-facing failure: printed as one line, exit status 1."""


# ------------------------------------------------------------------ types

def _number(kind, low=None, high=None, low_open=False, what='a number'):
    """An argparse type: `kind` within [low, high] (or (low, high])."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError('%r is not %s' % (text, what)) \
                from None
        if value != value or (low is not None and (
                value < low or (low_open and value == low))) or (
                high is not None and value > high):
            bounds = ('> %s' % low if low_open else '>= %s' % low) \
                if high is None else '%s %s..%s' % (
                    'in (' if low_open else 'in', low, high)
            raise argparse.ArgumentTypeError('%s must be %s' % (text, bounds))
        return value
    parse.__name__ = what
    return parse


positive_int = _number(int, 1, what='a whole number >= 1')
non_negative_int = _number(int, 0, what='a whole number >= 0')
positive_float = _number(float, 0.0, low_open=True, what='a number > 0')
fraction = _number(float, 0.0, 1.0, low_open=True, what='a number in (0, 1]')
image_size = _number(int, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE,
                     what='an image size in pixels')
export_batch_size = _number(int, 1, graph_format.MAX_BATCH_SIZE,
                            what='a batch size')
non_negative_float = _number(float, 0.0, what='a number >= 0')
unit_interval = _number(float, 0.0, 1.0, what='a number in 0..1')


def writable_file(text):
    """An output file path whose folder exists and is writable."""
    writable_place(text)
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError('%s is a folder, not a file' % text)
    return text


def writable_place(text):
    """An output file or folder path whose parent folder exists and is
    writable (the output itself may exist; it is replaced atomically)."""
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(
            'cannot write %s: the folder %s does not exist' % (text, parent))
    if not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(
            'cannot write %s: the folder %s is not writable' % (text, parent))
    return text


def url(text):
    """An http(s) or file URL."""
    if not re.match(r'^(https?|file)://\S+$', text):
        raise argparse.ArgumentTypeError(
            '%r is not a URL (expected http://, https:// or file://...)' % text)
    return text


def validation_fraction(text):
    """A number in [0, 1)."""
    value = unit_interval(text)
    if value == 1.0:
        raise argparse.ArgumentTypeError('%s must be below 1 (the train split '
                                         'would be empty)' % text)
    return value


def hosts(text):
    """A comma list of host:port."""
    try:
        return ','.join(cluster.parse_hosts(text))
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# ------------------------------------------------------- shared options

def common_options():
    """A parent parser with the options every command takes."""
    common = ArgumentParser(add_help=False)
    common.add_argument('--verbose', action='store_true',
                        help="show TensorFlow's own log lines")
    common.add_argument('--debug', action='store_true',
                        help='show the traceback of a failure')
    return common


def add_command(commands, name, **kwargs):
    """Adds the (sub)command `name` to `commands` (a subparsers action),
    with --verbose and --debug; returns its parser."""
    return commands.add_parser(name, parents=[common_options()], **kwargs)


def add_model_arguments(command, checkpoint_required=True):
    """--checkpoint, --model, --image-size and --force-image-size."""
    command.add_argument(
        '--checkpoint', required=checkpoint_required,
        help='a checkpoint path (prefix, .index or folder) or a catalogue '
             'name' + ('' if checkpoint_required else
                       ' (default: --model when it is a catalogue name, '
                       'else %s: the copy of Google\'s quantized '
                       'mobilenet_v2_1.0_224 inside the package, no '
                       'network needed)' % registry.DEFAULT_MODEL))
    command.add_argument('--model', help='a nets_factory or catalogue '
                         'name (default: inferred from the checkpoint)')
    command.add_argument('--image-size', type=image_size,
                         help='input size (default: the one recorded '
                              'beside the checkpoint, the catalogue\'s, '
                              'a published-style path\'s, else 224)')
    command.add_argument('--force-image-size', action='store_true',
                         help='run a quantization-aware checkpoint at an '
                              '--image-size other than the one its '
                              'ranges were calibrated at (refused '
                              'otherwise)')


def add_max_pixels(command):
    """--max-pixels: the largest image decoded."""
    command.add_argument('--max-pixels', type=positive_int,
                         default=image_files.MAX_PIXELS,
                         help='refuse larger images before decoding them '
                              '(default %(default)s)')


def add_runtime_argument(command):
    """--runtime: which runtime runs the model."""
    # validated by slimnets.runtimes.load (an InputError names the
    # choices), so that parsing stays free of TensorFlow imports
    command.add_argument('--runtime', default='auto',
                         help='tensorflow, tflite, onnxruntime, openvino '
                              'or auto (default: the fastest installed '
                              'one for the batch size, measured once)')


def add_cache_argument(command):
    """--cache-dir: where catalogue checkpoints are kept."""
    command.add_argument('--cache-dir', help='checkpoint cache (default: '
                         '$SLIMNETS_CACHE, else checkpoints/ of a source '
                         'checkout, else ~/.cache/slimnets)')


def add_cluster_arguments(command):
    """Training across processes and machines (research/slim's spellings
    too); without them TF_CONFIG is read, else one process trains."""
    group = command.add_argument_group(
        'cluster', 'train on TensorFlow\'s distributed runtime: parameter '
        'servers hold the variables, workers compute; worker 0 (the chief) '
        'restores and writes checkpoints.  Without these, TF_CONFIG is read')
    group.add_argument('--ps-hosts', '--ps_hosts', type=hosts,
                       metavar='H:P,...', help='the parameter servers')
    group.add_argument('--worker-hosts', '--worker_hosts', type=hosts,
                       metavar='H:P,...', help='the workers (the first is '
                       'the chief)')
    group.add_argument('--job-name', '--job_name', choices=cluster.JOBS,
                       help='this process\'s job')
    group.add_argument('--task-index', '--task_index', type=non_negative_int,
                       metavar='K', help='this process\'s index in its job '
                       '(default 0)')
    group.add_argument('--sync-replicas', '--sync_replicas',
                       action='store_true', help='synchronous steps: '
                       'average the workers\' gradients '
                       '(SyncReplicasOptimizer)')
    group.add_argument('--replicas-to-aggregate', '--replicas_to_aggregate',
                       type=positive_int, metavar='R', help='gradients per '
                       'synchronous step (default: the workers)')
