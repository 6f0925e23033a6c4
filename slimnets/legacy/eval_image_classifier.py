"""research/slim's eval_image_classifier.py, flags as they were.

    python -m slimnets.legacy.eval_image_classifier \\
        --checkpoint_path=/tmp/train --eval_dir=/tmp/eval \\
        --dataset_name=flowers --dataset_split_name=validation \\
        --dataset_dir=/tmp/flowers --model_name=mobilenet_v1_025

A translation onto `slimnets.inference.evaluation.evaluate` (what `slimnets eval`
runs).  It prints `eval/Accuracy[...]` and `eval/Recall_5[...]` as the
reference logs them, and writes both as summaries to `--eval_dir` (and the
full result as `eval_dir/results.json`).  The checkpoint's moving averages
are used when `--moving_average_decay` is given, its variables otherwise,
as in the reference.  Evaluates once (the reference's behaviour; it has no
loop).
"""

import json
import os
import sys

import tensorflow.compat.v1 as tf

from slimnets import fileio
from slimnets import legacy
from slimnets.errors import UsageError
from slimnets.inference import evaluation

__all__ = [
    'PROGRAM', 'RESULTS_FILE', 'build_parser', 'translate',
    'write_summaries', 'main',
]

PROGRAM = 'eval_image_classifier'
RESULTS_FILE = 'results.json'

_UNSUPPORTED = {'labels_offset': 0, 'use_grayscale': False,
                'quantize': False}


def build_parser():
    parser = legacy.Parser(
        prog=PROGRAM, description='research/slim eval_image_classifier.py '
        'flags, run by slimnets (single process).')
    add = parser.add_argument
    add('--batch_size', type=int, default=100)
    add('--max_num_batches', type=legacy.optional(int), default=None,
        help='evaluate only this many batches (default all)')
    legacy.add_cluster_flags(parser, worker_flags=False)
    add('--checkpoint_path', default='/tmp/tfmodel/',
        help='a checkpoint prefix or a folder (its latest checkpoint)')
    add('--eval_dir', default='/tmp/tfmodel/',
        help='where the summaries and results.json are written')
    add('--num_preprocessing_threads', type=int, default=4,
        help='accepted; tf.data tunes its own parallelism')
    legacy.add_dataset_and_model_flags(parser, split='test')
    add('--moving_average_decay', type=legacy.optional(float), default=None,
        help='evaluate the moving averages of the weights')
    add('--eval_image_size', type=legacy.optional(int), default=None)
    parser.add_bool('quantize', False, 'not supported (must be false)')
    parser.add_bool('use_grayscale', False, 'not supported (must be false)')
    return parser


def translate(args):
    """The `evaluation.evaluate` keyword arguments of parsed flags.

    Raises:
      UsageError: a cluster value or an unsupported flag.
    """
    legacy.check_single_process(args)
    legacy.refuse_unless_default(args, _UNSUPPORTED)
    legacy.dataset_classes(args.dataset_name)
    legacy.check_preprocessing(args.preprocessing_name)
    if not args.dataset_dir:
        raise UsageError('you must supply the dataset directory with '
                         '--dataset_dir')
    if args.batch_size < 1 or (args.max_num_batches is not None and
                               args.max_num_batches < 1):
        raise UsageError('--batch_size and --max_num_batches must be at '
                         'least 1')
    return dict(
        checkpoint=legacy.checkpoint_prefix(args.checkpoint_path),
        data=args.dataset_dir, split=args.dataset_split_name,
        model=args.model_name, batch_size=args.batch_size,
        max_images=(args.max_num_batches * args.batch_size
                    if args.max_num_batches else None),
        image_size=args.eval_image_size,
        moving_average=args.moving_average_decay is not None,
        progress=False)


def write_summaries(eval_dir, result):
    """eval/Accuracy and eval/Recall_5 as TensorBoard scalars at the
    checkpoint's step, and the whole result as results.json."""
    os.makedirs(eval_dir, exist_ok=True)
    step = _step(result['checkpoint'])
    summary = tf.Summary(value=[
        tf.Summary.Value(tag='eval/Accuracy', simple_value=result['top1']),
        tf.Summary.Value(tag='eval/Recall_5', simple_value=result['top5'])])
    with tf.Graph().as_default():  # the v1 writer refuses eager mode
        writer = tf.summary.FileWriter(eval_dir, graph=None)
        try:
            writer.add_summary(summary, step)
        finally:
            writer.close()
    fileio.write_bytes(os.path.join(eval_dir, RESULTS_FILE), (json.dumps(
        result, indent=1) + '\n').encode('utf-8'))


def _step(prefix):
    """The global step a 'model.ckpt-N' prefix names, else 0."""
    tail = os.path.basename(str(prefix)).rpartition('-')[2]
    return int(tail) if tail.isdigit() else 0


def _evaluate(args):
    result = evaluation.evaluate(**translate(args))
    print('eval/Accuracy[%s]' % result['top1'])
    print('eval/Recall_5[%s]' % result['top5'])
    print('images: %d, checkpoint: %s' % (result['images'],
                                          result['checkpoint']))
    write_summaries(args.eval_dir, result)


def main(argv=None):
    """Runs the script on `argv` (default sys.argv[1:]); the exit status."""
    return legacy.run(PROGRAM, build_parser(), _evaluate, argv)


if __name__ == '__main__':
    sys.exit(main())
