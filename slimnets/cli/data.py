"""`slimnets data build`: a tree of class folders as TFRecord shards (over
`slimnets.datasets.builder`)."""

from slimnets.cli import arguments

__all__ = ['add_parser', 'run_build']


def add_parser(commands):
    """Adds `data` (and its subcommand `build`) to `commands`."""
    data = arguments.add_command(
        commands, 'data', help='build datasets (TFRecord shards)',
        description='Dataset tools (slimnets.datasets.builder).')
    data_commands = data.add_subparsers(dest='data_command',
                                        metavar='SUBCOMMAND')
    data_commands.required = True
    build = arguments.add_command(
        data_commands, 'build', help='class folders -> TFRecord shards',
        description='Write a tree of class folders as research/slim '
                    'ImageNet-format TFRecord shards (train-00000-of-0000N, '
                    'validation-...) plus labels.txt, in parallel; a rerun '
                    'skips the shards already written.')
    build.add_argument('--input', required=True,
                       help='folder with one sub-folder per class')
    build.add_argument('--output', required=True,
                       type=arguments.writable_place, help='output folder')
    build.add_argument('--shards', type=arguments.positive_int, default=2,
                       help='train shards (default %(default)s)')
    build.add_argument('--validation-fraction',
                       type=arguments.validation_fraction, default=0.1,
                       help='share of each class for validation, in [0, 1) '
                            '(default %(default)s)')
    build.add_argument('--labels', metavar='FILE',
                       help='class order: one class folder name per line, or '
                            '"label:name" lines')
    build.add_argument('--workers', type=arguments.positive_int,
                       help='shards written at once (default: CPU count)')
    build.add_argument('--no-progress', action='store_true')
    build.set_defaults(handler=run_build)


def run_build(args):
    """Writes the shards and prints what was written and skipped."""
    from slimnets.datasets import builder  # pylint: disable=import-outside-toplevel
    report = builder.build(
        args.input, args.output, shards=args.shards,
        validation_fraction=args.validation_fraction,
        labels_file=args.labels, workers=args.workers,
        progress=not args.no_progress)
    numbering = {'imagenet': 'ImageNet synsets from 1 (0 is background)',
                 'flowers': 'class folders in sorted order from 0',
                 'labels_file': 'as numbered in %s' % args.labels}
    print('classes: %d (%s)' % (len(report.class_names),
                                numbering[report.numbering]))
    for split in ('train', 'validation'):
        if report.shards[split]:
            print('%-10s %d records in %d shards' % (
                split, report.records[split], len(report.shards[split])))
    print('shards written: %d, already done: %d' % (report.shards_written,
                                                    report.shards_reused))
    print('skipped: %d' % len(report.skipped))
    for path, reason in report.skipped:
        print('  %s: %s' % (path, reason))
    print('output: %s' % report.output)
