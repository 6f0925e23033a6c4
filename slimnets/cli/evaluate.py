"""`slimnets eval`: top-1 / top-5 accuracy over labelled images (over
`slimnets.inference.evaluate`), in shards and merged."""

import json

from slimnets import fileio
from slimnets.cli import arguments
from slimnets.cli.arguments import CommandError
from slimnets.cli.output import format_kwargs

__all__ = ['add_parser', 'run']


def add_parser(commands):
    """Adds `eval` to `commands`."""
    evaluate = arguments.add_command(
        commands, 'eval', help='top-1 / top-5 accuracy over labelled images',
        description='Evaluate over a folder with one sub-folder per class '
                    '(synset ids or label names) or slim TFRecords '
                    '(image/encoded, image/class/label).')
    arguments.add_model_arguments(evaluate, checkpoint_required=False)
    arguments.add_max_pixels(evaluate)
    evaluate.add_argument('--data',
                          help='class-folder tree, TFRecord file, folder of '
                               'shards or glob, or a research/slim '
                               'dataset_dir (see --split)')
    evaluate.add_argument('--split',
                          help='research/slim split in a dataset_dir '
                               '(SPLIT-* shards; default: validation, else '
                               'test, when it holds several)')
    evaluate.add_argument('--batch-size', type=arguments.positive_int,
                          default=32)
    evaluate.add_argument('--max-images', type=arguments.positive_int,
                          help='only the first N images of the stream')
    evaluate.add_argument('--shard', type=arguments.non_negative_int,
                          metavar='K',
                          help='evaluate only slice K (0-based) of '
                               '--num-shards: every N-th image from the K-th')
    evaluate.add_argument('--num-shards', type=arguments.positive_int,
                          metavar='N')
    evaluate.add_argument('--merge', nargs='+', metavar='JSON',
                          help='combine the --json results of the N shards '
                               '(instead of evaluating)')
    evaluate.add_argument('--json', type=arguments.writable_file,
                          help='also write the results here')
    evaluate.add_argument('--no-progress', action='store_true')
    arguments.add_runtime_argument(evaluate)
    arguments.add_cache_argument(evaluate)
    evaluate.set_defaults(handler=run, usage_error=evaluate.error)


def run(args):
    """Evaluates (or merges shard results) and prints the accuracy."""
    result = _merge(args) if args.merge else _evaluate(args)
    if result.get('model'):
        print('%-12s %s' % ('model', result['model']))
    print('%-12s %s %s' % ('network', result['network'],
                           format_kwargs(result['network_kwargs'])))
    print('%-12s %s' % ('checkpoint', result['checkpoint']))
    if result.get('num_shards'):
        print('%-12s %d of %d' % ('shard', result['shard'],
                                  result['num_shards']))
    if result.get('merged_shards'):
        print('%-12s %d shards' % ('merged', result['merged_shards']))
    print('%-12s %d' % ('images', result['images']))
    print('%-12s %.4f' % ('top-1', result['top1']))
    print('%-12s %.4f' % ('top-5', result['top5']))
    print('%-12s %s' % ('runtime', result.get('runtime')))
    if args.json:
        fileio.write_bytes(args.json, (json.dumps(result, indent=1) + '\n')
                           .encode('utf-8'))
        print('%-12s %s' % ('written', args.json))


def _merge(args):
    if args.data or args.shard is not None or args.num_shards is not None:
        args.usage_error('--merge combines results: give no --data, '
                         '--shard or --num-shards with it')
    from slimnets.inference import evaluation  # pylint: disable=import-outside-toplevel
    return evaluation.merge(_read_results(args.merge))


def _evaluate(args):
    if not args.data:
        args.usage_error('the following arguments are required: --data '
                         '(or --merge A.json B.json ...)')
    if (args.shard is None) != (args.num_shards is None) or (
            args.shard is not None and args.shard >= args.num_shards):
        args.usage_error('give --shard K and --num-shards N together, '
                         'with K < N')
    from slimnets import inference  # pylint: disable=import-outside-toplevel
    return inference.evaluate(args.checkpoint, args.data, args.model,
                              batch_size=args.batch_size,
                              max_images=args.max_images,
                              image_size=args.image_size,
                              max_pixels=args.max_pixels,
                              progress=not args.no_progress,
                              cache_dir=args.cache_dir,
                              shard=args.shard,
                              num_shards=args.num_shards,
                              split=args.split, runtime=args.runtime,
                              force_image_size=args.force_image_size)


def _read_results(paths):
    results = []
    for path in paths:
        try:
            with open(path) as handle:
                results.append(json.load(handle))
        except (OSError, ValueError) as error:
            raise CommandError('cannot read the eval result %s: %s' % (
                path, getattr(error, 'strerror', None) or error)) from None
    return results
