"""research/slim's export_inference_graph.py, flags as they were.

    python -m slimnets.legacy.export_inference_graph \\
        --alsologtostderr --model_name=mobilenet_v1_025 --image_size=128 \\
        --output_file=/tmp/mobilenet_v1_025_inf_graph.pb

Writes the unfrozen inference GraphDef (no weights): a placeholder named
'input' [batch_size, image_size, image_size, 3], the network in its
reference scopes (the v1 output `MobilenetV1/Predictions/Reshape_1`), and
slimnets' 'logits' and 'probabilities' names (`optimize.
build_inference_network`, the graph every slimnets export freezes).  Freeze
it with TensorFlow's freeze_graph, or in one step with `slimnets export`.
"""

import sys

import tensorflow.compat.v1 as tf
from google.protobuf import text_format

from slimnets import fileio
from slimnets import legacy
from slimnets import optimize
from slimnets import quantize
from slimnets.errors import UsageError
from slimnets.inference import models

__all__ = ['PROGRAM', 'build_parser', 'inference_graph_def', 'main']

PROGRAM = 'export_inference_graph'

_UNSUPPORTED = {'use_grayscale': False, 'final_endpoint': None}


def build_parser():
    parser = legacy.Parser(
        prog=PROGRAM, description='research/slim export_inference_graph.py '
        'flags, run by slimnets.')
    add = parser.add_argument
    add('--model_name', default='inception_v3',
        help='a nets_factory MobileNet name, e.g. mobilenet_v1_025')
    parser.add_bool('is_training', False,
                    'build the training graph (batch norm in training mode)')
    add('--image_size', type=legacy.optional(int), default=None,
        help="default the network's")
    add('--batch_size', type=legacy.optional(int), default=None,
        help='fixed batch size of the input (default any)')
    add('--dataset_name', default='imagenet',
        help='imagenet, flowers, cifar10 or mnist (its class count)')
    add('--labels_offset', type=int, default=0,
        help='classes left out of the dataset\'s count (1: no background)')
    add('--output_file', default='', help='where the GraphDef is written')
    add('--dataset_dir', default='', help='accepted; unused (as in the '
        'reference)')
    parser.add_bool('write_text_graphdef', False,
                    'write the GraphDef as text')
    parser.add_bool('use_grayscale', False, 'not supported (must be false)')
    parser.add_bool('quantize', False,
                    'rewrite the graph for quantized evaluation '
                    '(tf.contrib.quantize.create_eval_graph)')
    add('--final_endpoint', type=legacy.optional(str), default=None,
        help='not supported (must be unset)')
    return parser


def inference_graph_def(args):
    """The GraphDef the flags describe.

    Raises:
      UsageError: an unsupported flag or no --output_file.
    """
    legacy.refuse_unless_default(args, _UNSUPPORTED)
    if not args.output_file:
        raise UsageError('you must supply the path to save to with '
                         '--output_file')
    num_classes = legacy.dataset_classes(args.dataset_name) - \
        args.labels_offset
    if num_classes < 1:
        raise UsageError('--labels_offset=%d leaves no class of %s' % (
            args.labels_offset, args.dataset_name))
    spec, _ = models.model_spec(args.model_name, None, args.image_size,
                                num_classes)
    graph = tf.Graph()
    with graph.as_default():
        optimize.build_inference_network(spec, args.batch_size,
                                         is_training=args.is_training)
        if args.quantize:
            quantize.create_eval_graph(graph)
    return graph.as_graph_def()


def _export(args):
    graph_def = inference_graph_def(args)
    content = text_format.MessageToString(graph_def).encode('utf-8') \
        if args.write_text_graphdef else graph_def.SerializeToString()
    fileio.write_bytes(args.output_file, content)
    print('wrote %s (%d nodes; input: input)' % (args.output_file,
                                                 len(graph_def.node)))


def main(argv=None):
    """Runs the script on `argv` (default sys.argv[1:]); the exit status."""
    return legacy.run(PROGRAM, build_parser(), _export, argv)


if __name__ == '__main__':
    sys.exit(main())
