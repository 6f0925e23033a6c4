"""Class folders to TFRecord shards in research/slim's ImageNet format.

`build(input_dir, output_dir)` turns a tree with one sub-folder per class
into `train-00000-of-0000N` and `validation-00000-of-0000M` shards of
`tf.train.Example`s with research/slim's `build_imagenet_data.py` keys:

    image/encoded      the file's bytes, unchanged
    image/format       'JPEG', 'PNG', 'GIF' or 'BMP' (from the header)
    image/class/label  int64 class index (numbering below)
    image/class/synset the class folder's name
    image/class/text   the ImageNet label of a synset, else the folder name
    image/height, image/width  read from the header, without decoding
    image/colorspace, image/channels  from the header ('RGB'/3 when unknown)
    image/filename     the file's base name

and `labels.txt` in research/slim's `dataset_utils.write_label_file` form
(`label:class name`, one per line).

Label numbering.  When every class folder is an ImageNet synset id the
numbering is `build_imagenet_data.py`'s with its full 1000-synset labels
file: the synsets in sorted order from 1, 0 left for the background class,
so the labels match the published 1001-class checkpoints whichever subset
of classes is present.  Otherwise it is `download_and_convert_flowers.py`'s:
the class folder names in sorted order from 0.  A `labels_file` (one class
name per line, or `label:name` lines) fixes the order and, with the
`label:name` form, the numbers.

Splits.  Each class's files (sorted) are shuffled with seed 12345
(`build_imagenet_data.py`'s) and `validation_fraction` of them go to the
validation split; each split is then shuffled with the same seed, so a
rerun on the same files makes the same plan.

Safety and resumption.  Each shard is written under a temporary name in the
output folder (`slimnets.fileio`'s, so a killed run's leftovers are removed
by the next) and renamed (`os.replace`) when complete, followed by a small
`.NAME.done` record of what it holds.  A rerun with the same plan skips the
shards already done; a different plan in a non-empty output is refused.
Files that cannot be read, that are not regular files (a FIFO, a device:
checked without blocking, before any read), or whose header is not JPEG,
PNG, GIF or BMP, are skipped, counted and listed.  When one shard fails
(or on Ctrl-C) the others stop and remove their temporaries.  Shards are written in parallel by a
thread pool (reading and protobuf serialization release the GIL).
"""

import collections
import concurrent.futures
import hashlib
import json
import logging
import os
import random
import stat
import threading

import tensorflow.compat.v1 as tf
from tqdm import tqdm

from slimnets import fileio
from slimnets import labels as labels_lib
from slimnets.datasets import sources
from slimnets.datasets.records import image_example
from slimnets.datasets.records import shard_name
from slimnets.errors import InputError
from slimnets.errors import OutputError
from slimnets.errors import SlimnetsError
from slimnets.images import IMAGE_EXTENSIONS

__all__ = [
    'SEED', 'PLAN_FILE', 'SPLITS', 'BuildReport', 'class_labels', 'plan',
    'build',
]

_log = logging.getLogger(__name__)

SEED = 12345                       # build_imagenet_data.py's shuffle seed
PLAN_FILE = sources.BUILD_PLAN_FILE
SPLITS = ('train', 'validation')

BuildReport = collections.namedtuple('BuildReport', [
    'output', 'class_names', 'labels', 'numbering', 'records', 'shards',
    'shards_written', 'shards_reused', 'skipped'])
BuildReport.__doc__ = """What `build` wrote.

  output: the output folder.
  class_names: the class folder names, in label order.
  labels: {class name: label}.
  numbering: 'imagenet' (synsets from 1, 0 background) or 'flowers'
    (sorted names from 0) or 'labels_file'.
  records: {split: records written}.
  shards: {split: [shard file names]}.
  shards_written, shards_reused: counts over both splits.
  skipped: [(path, reason)] of files left out.
"""


def class_labels(class_names, labels_file=None):
    """({class name: label}, numbering) as the module docstring says."""
    synsets = labels_lib.imagenet_synsets()
    imagenet = set(synsets[1:])
    if labels_file:
        rows = labels_lib.read_labels_file(labels_file)
        if rows[0][0] is not None:
            return {name: label for label, name in rows}, 'labels_file'
        names = [name for _, name in rows]
    else:
        names = sorted(class_names)
    if all(name in imagenet for name in names):
        if labels_file:   # build_imagenet_data: the file's order, from 1
            return {n: i + 1 for i, n in enumerate(names)}, 'imagenet'
        return {n: synsets.index(n) for n in names}, 'imagenet'
    return {n: i for i, n in enumerate(names)}, 'flowers'


def _class_text(name, numbering):
    if numbering == 'imagenet':
        return labels_lib.imagenet_labels()[labels_lib.label_index(name)]
    return name


def _find_files(input_dir):
    """({class name: [paths]} sorted, class names): `sources.class_tree`,
    so a records folder in the tree is no class and a class folder with no
    images (empty, a link loop) is refused."""
    files = sources.class_tree(input_dir)
    return files, sorted(files)


def _check_output_place(input_dir, output_dir):
    """Refuses an output folder inside the input tree (or equal to it):
    its shards would be read back as a class folder by the next run."""
    source = os.path.join(os.path.realpath(input_dir), '')
    target = os.path.join(os.path.realpath(output_dir), '')
    if target.startswith(source):
        raise InputError('the output folder %s is inside the input folder %s '
                         '(its shards would become a class); give an --output '
                         'outside %s' % (output_dir, input_dir, input_dir))


def plan(input_dir, shards=2, validation_fraction=0.1, labels_file=None):
    """The build plan: what goes into which shard, before anything is read.

    Returns:
      (plan dict: {'classes', 'labels', 'numbering', 'shards': {name:
      [[path, label, class name], ...]}}, labels) -- JSON-serializable.
    """
    files, classes = _find_files(input_dir)
    labels, numbering = class_labels(classes, labels_file)
    unknown = [c for c in classes if c not in labels]
    if unknown:
        raise InputError('class folder(s) %s are not in the labels file %s'
                         % (', '.join(unknown[:5]), labels_file))
    splits = {split: [] for split in SPLITS}
    rng = random.Random(SEED)
    for name in classes:
        paths = list(files[name])
        rng.shuffle(paths)
        count = int(round(validation_fraction * len(paths)))
        for index, path in enumerate(paths):
            splits['validation' if index < count else 'train'].append(
                [path, labels[name], name])
    shard_lists = {}
    for split, items in splits.items():
        random.Random(SEED).shuffle(items)
        if not items:
            continue
        count = shards if split == 'train' else max(
            1, int(round(shards * validation_fraction)))
        count = max(1, min(count, len(items)))
        bounds = [len(items) * i // count for i in range(count + 1)]
        for index in range(count):
            shard_lists[shard_name(split, index, count)] = \
                items[bounds[index]:bounds[index + 1]]
    if not shard_lists:
        raise InputError('no images (%s) under the class folders of %s'
                         % (', '.join(IMAGE_EXTENSIONS), input_dir))
    ordered = [c for c, _ in sorted(labels.items(), key=lambda kv: kv[1])]
    return {'classes': ordered, 'labels': labels, 'numbering': numbering,
            'shards': shard_lists}


def _plan_digest(build_plan):
    text = json.dumps(build_plan, sort_keys=True).encode('utf-8')
    return hashlib.sha256(text).hexdigest()


def _write_atomic(path, text):
    fileio.write_bytes(path, text.encode('utf-8'))


def _done_path(output_dir, name):
    return os.path.join(output_dir, '.%s.done' % name)


_FILE_KINDS = ((stat.S_ISFIFO, 'a FIFO'), (stat.S_ISSOCK, 'a socket'),
               (stat.S_ISCHR, 'a character device'),
               (stat.S_ISBLK, 'a block device'), (stat.S_ISDIR, 'a folder'))


def _read_regular_file(path):
    """The bytes of `path`, or raises OSError; a FIFO, device or socket is
    refused without blocking (opened non-blocking, checked by fstat before
    any read)."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))
    with os.fdopen(descriptor, 'rb') as handle:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            kind = next((k for test, k in _FILE_KINDS if test(mode)),
                        'not a regular file')
            raise _NotRegular('not a regular file (%s)' % kind)
        return handle.read()


class _NotRegular(InputError):
    """A path that is not a regular file."""


class _Stopped(SlimnetsError):
    """Another shard failed or the build was interrupted."""


def _write_shard(output_dir, name, items, numbering, on_image, stop=None):
    """Writes one shard (temporary name, then renamed); returns its
    record count and [(path, reason)] skipped.  When `stop` (an Event) is
    set the shard is abandoned and its temporary removed."""
    final = os.path.join(output_dir, name)
    temporary = fileio.temporary_name(final)
    records, skipped = 0, []
    try:
        with tf.io.TFRecordWriter(temporary) as writer:
            for path, label, class_name in items:
                if stop is not None and stop.is_set():
                    raise _Stopped(name)
                try:
                    data = _read_regular_file(path)
                except _NotRegular as error:
                    skipped.append((path, str(error)))
                    on_image()
                    continue
                except OSError as error:
                    skipped.append((path, 'cannot read: %s' % (
                        error.strerror or error)))
                    on_image()
                    continue
                example = image_example(data, label, class_name,
                                        _class_text(class_name, numbering),
                                        os.path.basename(path))
                if example is None:
                    skipped.append((path, 'not a JPEG, PNG, GIF or BMP '
                                          'image'))
                else:
                    writer.write(example)
                    records += 1
                on_image()
        os.replace(temporary, final)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)    # Ctrl-C or a failure: nothing half-kept
    _write_atomic(_done_path(output_dir, name), json.dumps(
        {'records': records, 'skipped': skipped}))
    return records, skipped


def build(input_dir, output_dir, shards=2, validation_fraction=0.1,
          labels_file=None, workers=None, progress=True):
    """Writes class folders as research/slim ImageNet-format TFRecord shards.

    Args:
      input_dir: one sub-folder per class holding JPEG/PNG/GIF/BMP files.
      output_dir: created if needed; shards, labels.txt and the plan go here.
      shards: train shards; validation gets round(shards * fraction), at
        least 1 (no split has more shards than images).
      validation_fraction: share of each class in the validation split,
        0 <= f < 1.
      labels_file: class order (and numbers), see the module docstring.
      workers: shards written at once (default: the CPU count).
      progress: show a tqdm bar over the images.

    Returns:
      A BuildReport.

    Raises:
      InputError: no class folders or images, a bad labels file, or an
        output folder holding another build.
      OutputError: a shard or record file could not be written.
    """
    input_dir = fileio.path_argument(input_dir, 'input_dir')
    output_dir = fileio.path_argument(output_dir, 'output_dir')
    for name, value, low in (('shards', shards, 1), ('workers', workers, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(
                value, int) or value < low):
            raise InputError('%s must be a whole number of at least %d (got '
                             '%r)' % (name, low, value))
    if shards is None:
        raise InputError('shards must be a whole number of at least 1 (got '
                         'None)')
    if isinstance(validation_fraction, bool) or not isinstance(
            validation_fraction, (int, float)):
        raise InputError('the validation fraction must be a number in [0, 1) '
                         '(got %r)' % (validation_fraction,))
    if not 0 <= validation_fraction < 1:
        raise InputError('the validation fraction must be in [0, 1) (got %s)'
                         % validation_fraction)
    _check_output_place(input_dir, output_dir)
    build_plan = plan(input_dir, shards, validation_fraction, labels_file)
    _claim_output(output_dir, _plan_digest(build_plan))
    results, pending = {}, []
    for name, items in build_plan['shards'].items():
        done = _done_path(output_dir, name)
        if os.path.isfile(done) and os.path.isfile(
                os.path.join(output_dir, name)):
            with open(done) as handle:
                results[name] = json.load(handle)
        else:
            pending.append(name)
    reused = len(results)
    results.update(_write_shards(output_dir, build_plan, pending, workers,
                                 progress))
    labels_lib.write_labels_file(output_dir, {
        build_plan['labels'][name]: name for name in build_plan['classes']})
    records = {split: 0 for split in SPLITS}
    shard_names = {split: [] for split in SPLITS}
    skipped = []
    for name in sorted(build_plan['shards']):
        split = name.split('-')[0]
        records[split] += results[name]['records']
        shard_names[split].append(name)
        skipped.extend(tuple(item) for item in results[name]['skipped'])
    return BuildReport(output_dir, build_plan['classes'], build_plan['labels'],
                       build_plan['numbering'], records, shard_names,
                       len(pending), reused, sorted(skipped))


def _claim_output(output_dir, digest):
    """Creates `output_dir` for the build of `digest`, or finds the earlier
    run of the same build there (its finished shards are kept)."""
    os.makedirs(output_dir, exist_ok=True)
    fileio.remove_stale(output_dir)     # shards of a killed earlier run
    plan_path = os.path.join(output_dir, PLAN_FILE)
    if os.path.isfile(plan_path):
        with open(plan_path) as handle:
            recorded = json.load(handle).get('digest')
        if recorded != digest:
            raise InputError(
                '%s holds a build of other images or options; give a new '
                '--output, or empty that folder to rebuild' % output_dir)
    elif any(n.startswith(SPLITS) for n in os.listdir(output_dir)):
        raise InputError('%s already holds shards not written by this build; '
                         'give a new --output' % output_dir)
    _write_atomic(plan_path, json.dumps({'digest': digest}))


def _write_shards(output_dir, build_plan, pending, workers, progress):
    """Writes the `pending` shards, `workers` at a time; returns {shard
    name: {'records': count, 'skipped': [...]}}.  A failure or Ctrl-C stops
    every shard at its next image, with no temporary left."""
    results = {}
    total = sum(len(build_plan['shards'][n]) for n in pending)
    lock = threading.Lock()
    with tqdm(total=total, unit='img', disable=not progress,
              leave=False) as bar:
        def tick():
            with lock:
                bar.update(1)

        workers = workers or os.cpu_count() or 1
        stop = threading.Event()
        pool = concurrent.futures.ThreadPoolExecutor(
            max(1, min(workers, len(pending) or 1)))
        try:
            futures = {pool.submit(_write_shard, output_dir, name,
                                   build_plan['shards'][name],
                                   build_plan['numbering'], tick, stop): name
                       for name in pending}
            for future in concurrent.futures.as_completed(futures):
                try:
                    records, skipped = future.result()
                except OutputError:
                    raise
                except OSError as error:     # a full disk, a read-only place
                    raise OutputError('cannot write %s in %s: %s' % (
                        futures[future], output_dir,
                        error.strerror or error)) from None
                results[futures[future]] = {'records': records,
                                            'skipped': skipped}
                _log.info('wrote %s: %d records', futures[future], records)
        except BaseException:
            stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return results
