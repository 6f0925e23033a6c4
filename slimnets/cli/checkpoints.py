"""`slimnets inspect`, `slimnets list` and `slimnets fetch`: checkpoints
and the catalogue of published ones (over `slimnets.checkpoints`)."""

from slimnets import registry
from slimnets.cli import arguments
from slimnets.cli.output import format_kwargs

__all__ = ['add_parser', 'run_fetch', 'run_inspect', 'run_list']


def add_parser(commands):
    """Adds `inspect`, `list` and `fetch` to `commands`."""
    inspect = arguments.add_command(
        commands, 'inspect',
        help='variables of a checkpoint and which network it is',
        description='List a checkpoint\'s variables and identify the network '
                    '(family, depth multiplier, head, classes, shadows); with '
                    '--model, diff it against that network.')
    inspect.add_argument('checkpoint', metavar='CHECKPOINT')
    inspect.add_argument('--model', help='diff against this network')
    arguments.add_cache_argument(inspect)
    inspect.set_defaults(handler=run_inspect)

    listing = arguments.add_command(
        commands, 'list', help='the catalogue of published checkpoints',
        description='Every published slim MobileNet checkpoint with its '
                    'published accuracy, MACs and parameters, and whether '
                    'it is in the cache.')
    listing.add_argument('--family', choices=tuple(registry.FAMILIES))
    listing.add_argument('--sources', action='store_true',
                         help='also list every source URL, in the order '
                              'fetch tries them, with the hash fetch checks '
                              '(sha256, md5, or - for none)')
    arguments.add_cache_argument(listing)
    listing.set_defaults(handler=run_list)

    fetch = arguments.add_command(
        commands, 'fetch', help='download a catalogue checkpoint into the '
                                'cache',
        description='Download and unpack a published checkpoint (once); '
                    'prints its prefix.')
    fetch.add_argument('name', metavar='NAME')
    fetch.add_argument('--url', type=arguments.url,
                       help='download from this mirror instead')
    fetch.add_argument('--no-progress', action='store_true')
    arguments.add_cache_argument(fetch)
    fetch.set_defaults(handler=run_fetch)


def run_inspect(args):
    """Prints what a checkpoint holds; with --model, the diff against it."""
    from slimnets import checkpoints  # pylint: disable=import-outside-toplevel
    info = checkpoints.inspect(args.checkpoint, cache_dir=args.cache_dir)
    print(checkpoints.format_info(info))
    if args.model:
        import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel

        from slimnets import inference  # pylint: disable=import-outside-toplevel
        spec, _ = inference.model_spec(args.model)
        spec = spec._replace(
            num_classes=info.identity.num_classes or spec.num_classes)
        with tf.Graph().as_default():
            inference.build_network(spec, tf.placeholder(
                tf.float32, [1, spec.image_size, spec.image_size, 3]))
            print()
            print('against %s %s:' % (spec.network,
                                      format_kwargs(spec.kwargs)))
            print(checkpoints.format_diff(checkpoints.diff(info.checkpoint)))


def run_list(args):
    """Prints the catalogue, one checkpoint a line (and its sources)."""
    from slimnets import checkpoints  # pylint: disable=import-outside-toplevel
    print('%-38s %-7s %5s %5s %-8s %7s %7s %6s %6s  %-14s %s' % (
        'name', 'family', 'depth', 'size', 'weights', 'MACs(M)', 'params',
        'top-1', 'top-5', 'sources', 'cached'))
    for item in checkpoints.catalogue():
        if args.family and item.family != args.family:
            continue
        cached = checkpoints.cached_checkpoint(item.name, args.cache_dir)
        print('%-38s %-7s %5s %5d %-8s %7s %7s %6s %6s  %-14s %s' % (
            item.name, item.family, item.network_kwargs['depth_multiplier'],
            item.input_size, item.weights.split()[0][:8],
            _figure(item.macs_millions), _figure(item.params_millions),
            _figure(item.top1), _figure(item.top5),
            checkpoints.source_summary(item), 'yes' if cached else '-'))
        if args.sources:
            for fmt, check, url in checkpoints.available_sources(item):
                print('    %-12s %-6s %s' % (fmt, check, url))


def _figure(value):
    """A published figure, or '-' where none is published."""
    return '-' if value is None else ('%g' % value)


def run_fetch(args):
    """Downloads a catalogue checkpoint (once) and prints its prefix."""
    from slimnets import checkpoints  # pylint: disable=import-outside-toplevel
    prefix = checkpoints.fetch(args.name, cache_dir=args.cache_dir,
                               url=args.url, progress=not args.no_progress)
    print(prefix)
