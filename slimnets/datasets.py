"""Labelled images for evaluation and training, streamed through tf.data.

Accepted data (`find_source`):

* a class-folder tree: one sub-folder per class.  For evaluation the
  folder names are ImageNet synset ids or label names, or names in a
  fine-tuned model's labels.txt; for training they are the classes, in
  sorted order from 0;
* slim TFRecords (`image/encoded`, `image/class/label`, as `slimnets data
  build` and research/slim's converters write them): one file, a folder of
  shards (`*.tfrecord*`, `*-of-*`), or a glob;
* research/slim's `dataset_dir` with a split: the folder's `SPLIT-*`
  shards (ImageNet), `*_SPLIT_*.tfrecord` (flowers) or `*_SPLIT.tfrecord`
  (cifar10, mnist).  A folder holding several splits and no split named
  gives evaluation the validation (else test) split and training the train
  split.

Memory stays bounded whatever the dataset size: only the file list (image
paths, or TFRecord files) is held; records are read by an interleave across
shards, decoded and preprocessed by a parallel map (AUTOTUNE), shuffled
through a bounded buffer for training and prefetched.

Evaluation order is stable (no shuffling, deterministic interleave), so
`--max-images`, `shard` and `num_shards` select the same images on every
run; shard K of N takes every N-th example of the stream from the K-th.
"""

import glob
import logging
import os
import struct

import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.python.util import deprecation  # pylint: disable=g-direct-tensorflow-import

from slimnets import fileio
from slimnets import labels as labels_lib
from slimnets import preprocessing
from slimnets.errors import InputError
from slimnets.images import IMAGE_EXTENSIONS
from slimnets.images import MAX_PIXELS
from slimnets.images import check_image

_log = logging.getLogger(__name__)

AUTOTUNE = tf.data.experimental.AUTOTUNE
SHUFFLE_BUFFER = 10000        # training examples shuffled at once
CYCLE_LENGTH = 8              # TFRecord shards read at once
LABELS_FILE = 'labels.txt'    # research/slim dataset_utils: 'label:name'
ENCODED, LABEL = 'image/encoded', 'image/class/label'
REBUILD = ('rebuild that file (slimnets data build), or leave it out of '
           '--data')


class Source(object):
    """Where labelled images come from.

    Attributes:
      kind: 'folder' (image files) or 'records' (TFRecord files).
      files: image paths, or TFRecord paths.
      labels: for 'folder', the label of each path; None for 'records'.
      class_names: training classes in label order (None for evaluation).
      description: what `data` named, for messages.
    """

    def __init__(self, kind, files, labels=None, class_names=None,
                 description=''):
        self.kind, self.files, self.labels = kind, files, labels
        self.class_names, self.description = class_names, description

    def count(self):
        """Examples in the source (TFRecords are scanned, not parsed)."""
        if self.kind == 'folder':
            return len(self.files)
        return sum(count_records(path) for path in self.files)


# --------------------------------------------------------------- TFRecords

def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def _masked_crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) \
        & 0xFFFFFFFF


def _record_headers(path):
    """Yields the length of each record of a TFRecord file, checking each
    length's CRC and skipping the data (nothing is parsed).

    Raises:
      InputError: the file is not a TFRecord file, or is cut short.
    """
    try:
        handle = open(path, 'rb')
    except OSError as error:
        raise InputError('cannot read %s: %s' % (path, error.strerror)) \
            from None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        position = index = 0
        while position < size:
            header = handle.read(12)
            if len(header) < 12 or struct.unpack('<I', header[8:])[0] != \
                    _masked_crc32c(header[:8]):
                if index:
                    raise InputError(
                        '%s record %d is damaged (bad length checksum at byte '
                        '%d); %s' % (path, index, position, REBUILD))
                raise InputError(
                    '%s is not a TFRecord file (or it is damaged at byte %d); '
                    'give slim TFRecords or a folder of class folders'
                    % (path, position))
            length = struct.unpack('<Q', header[:8])[0]
            position += 12 + length + 4
            if position > size:
                raise InputError('%s is cut short (a record ends past the end '
                                 'of the file); rebuild it' % path)
            handle.seek(position)
            index += 1
            yield length


def damaged_record(path):
    """(index, TensorFlow's reason) of the first damaged record of a
    TFRecord file (a length or data checksum that does not match, a record
    cut short), or None when every record reads.  Streams the file once,
    one record at a time, in TensorFlow's reader."""
    index = 0
    try:
        with deprecation.silence():
            for _ in tf.io.tf_record_iterator(path):
                index += 1
    except tf.errors.DataLossError as error:
        return index, tf_message(error)
    except tf.errors.OpError as error:
        raise InputError('cannot read %s: %s' % (path, tf_message(error))) \
            from None
    return None


def count_records(path):
    """Records in a TFRecord file, from the record headers alone."""
    return sum(1 for _ in _record_headers(path))


def check_record_file(path):
    """Refuses a file that does not start as a TFRecord file."""
    for _ in _record_headers(path):
        break


def _is_record_name(name):
    """A TFRecord file's name (hidden files, such as `data build`'s
    `.NAME.done` records and temporaries, are not)."""
    return not name.startswith('.') and ('.tfrecord' in name or
                                         '-of-' in name)


def _split_files(folder, split):
    """research/slim's files of one split in a dataset_dir."""
    names = sorted(os.listdir(folder))
    return [os.path.join(folder, n) for n in names if
            not n.startswith('.') and os.path.isfile(os.path.join(folder, n))
            and (n.startswith(split + '-') or ('_%s_' % split) in n or
                n.endswith('_%s.tfrecord' % split))]


def record_files(data, split=None, default_splits=()):
    """The TFRecord files `data` names, or None for a class-folder tree.

    Args:
      data: a TFRecord file, a folder of shards, a glob or a dataset_dir.
      split: a research/slim split name ('train', 'validation', 'test').
      default_splits: splits tried in turn when a folder holds several.

    Raises:
      InputError: nothing there, or no file of `split`.
    """
    if any(c in data for c in '*?['):
        files = sorted(p for p in glob.glob(data) if os.path.isfile(p))
        if not files:
            raise InputError('no files match %s' % data)
        return files
    if os.path.isfile(data):
        if split:
            raise InputError('a split (%s) names shards in a folder, but %s '
                             'is a file' % (split, data))
        return [data]
    if not os.path.isdir(data):
        raise InputError('no data at %s' % data)
    if split:
        files = _split_files(data, split)
        if not files:
            raise InputError('%s has no %s split (no %s-* shards, '
                             '*_%s_*.tfrecord or *_%s.tfrecord files)'
                             % (data, split, split, split, split))
        return files
    records = sorted(os.path.join(data, n) for n in os.listdir(data)
                     if _is_record_name(n) and
                     os.path.isfile(os.path.join(data, n)))
    if not records:
        return None
    present = [s for s in ('train', 'validation', 'test')
               if _split_files(data, s)]
    if len(present) > 1:
        for name in default_splits:
            if name in present:
                _log.info('%s holds the splits %s; reading %s', data,
                          ', '.join(present), name)
                return _split_files(data, name)
    return records


def _label_file_names(folder):
    """Class names by label from research/slim's labels.txt ('N:name'),
    or None."""
    path = os.path.join(folder, LABELS_FILE)
    if not os.path.isfile(path):
        return None
    rows = {}
    for line in fileio.read_text(path, 'labels file').split('\n'):
        if not line.strip():
            continue
        number, colon, name = line.strip().partition(':')
        if not colon or not number.isdigit():
            return None
        rows[int(number)] = name
    if not rows:
        return None
    return [rows.get(i, 'background' if i == 0 else str(i))
            for i in range(max(rows) + 1)]


# ------------------------------------------------------------ class folders

BUILD_PLAN_FILE = '.build_plan.json'   # what `slimnets data build` leaves


def _is_records_folder(folder):
    """A folder of TFRecord shards (a `data build` output), not a class:
    it holds a build plan, or record files and no image."""
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    if BUILD_PLAN_FILE in names:
        return True
    if any(n.lower().endswith(IMAGE_EXTENSIONS) for n in names):
        return False
    return any(_is_record_name(n) and os.path.isfile(os.path.join(folder, n))
               for n in names)


def class_tree(folder, require_images=True, what='class folders'):
    """{class name: [image paths]} of a class-folder tree, names sorted.

    A sub-folder holding TFRecord shards (a `data build` output inside the
    tree) is not a class: it is left out and logged.

    Raises:
      InputError: `folder` is not a folder or has no class folders; a
        class folder is a link to `folder` or above it (a loop); with
        `require_images`, class folders holding no images (all named).
    """
    if not os.path.isdir(folder):
        raise InputError('%s is not a folder of %s' % (folder, what))
    classes = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isdir(path):
            continue
        if _is_records_folder(path):
            _log.warning('Leaving out %s: it holds TFRecord shards, not a '
                         'class of images', path)
            continue
        classes.append(name)
    if not classes:
        raise InputError('%s has no class sub-folders (expected one folder '
                         'per class, named by synset id or label name), and '
                         'no TFRecords' % folder)
    top = os.path.realpath(folder)
    loops = [name for name in classes if top == os.path.realpath(os.path.join(
        folder, name)) or top.startswith(os.path.join(os.path.realpath(
            os.path.join(folder, name)), ''))]
    if loops:
        raise InputError('class folder(s) %s in %s link back to %s or above it '
                         '(a loop); remove those links' % (
                             ', '.join(loops[:5]), folder, folder))
    files = {name: _images_of(os.path.join(folder, name)) for name in classes}
    empty = [name for name in classes if not files[name]]
    if require_images and empty and len(empty) < len(classes):
        raise InputError('class folder(s) %s in %s hold no images (%s); add '
                         'images or remove those folders' % (
                             ', '.join(empty[:5]) + (' and %d more' % (
                                 len(empty) - 5) if len(empty) > 5 else ''),
                             folder, ', '.join(IMAGE_EXTENSIONS)))
    return files


def _class_folders(folder):
    return sorted(class_tree(folder, require_images=False))


def _images_of(folder):
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder))
            if n.lower().endswith(IMAGE_EXTENSIONS)]


def _evaluation_label(class_name, folder, num_classes, class_names):
    try:
        if class_names is not None and num_classes not in (1000, 1001):
            return class_names.index(class_name)
        return labels_lib.label_index(class_name, num_classes)
    except (KeyError, ValueError):
        raise InputError('class folder %r in %s is not one of the '
                         "model's classes (an ImageNet synset id or label "
                         'name, or a name in its labels.txt)'
                         % (class_name, folder)) from None


def evaluation_source(data, num_classes, class_names=None, split=None):
    """The Source of evaluation data (see the module docstring)."""
    files = record_files(data, split, ('validation', 'test'))
    if files is not None:
        for path in files:
            check_record_file(path)
        return Source('records', files, description=data)
    paths, labels = [], []
    for name in _class_folders(data):
        label = _evaluation_label(name, data, num_classes, class_names)
        found = _images_of(os.path.join(data, name))
        paths.extend(found)
        labels.extend([label] * len(found))
    return Source('folder', paths, labels, description=data)


def training_source(data, split=None):
    """The Source of training data, with its class names.

    Class folders are the classes in sorted order; TFRecords take their
    names from a research/slim labels.txt beside them ('label:name'), else
    their labels are counted in one streaming pass (names '0', '1', ...).
    """
    files = record_files(data, split, ('train',))
    if files is None:
        tree = class_tree(data)
        classes = sorted(tree)
        paths, labels = [], []
        for index, name in enumerate(classes):
            paths.extend(tree[name])
            labels.extend([index] * len(tree[name]))
        if not paths:
            raise InputError('no images (%s) in the class folders of %s'
                             % (', '.join(IMAGE_EXTENSIONS), data))
        return Source('folder', paths, labels, classes, data)
    for path in files:
        check_record_file(path)
    folder = data if os.path.isdir(data) else os.path.dirname(files[0])
    class_names = _label_file_names(folder)
    source = Source('records', files, description=data)
    if class_names is None:
        _log.info('no labels.txt beside %s: reading every label once', data)
        largest = _largest_label(source)
        class_names = [str(i) for i in range(largest + 1)]
    source.class_names = class_names
    return source


def _largest_label(source):
    with tf.Graph().as_default():
        dataset = _records(source.files, deterministic=False).map(
            lambda record: _parse(record)[1], num_parallel_calls=AUTOTUNE)
        largest = dataset.reduce(tf.constant(-1, tf.int64), tf.maximum)
        with tf.Session() as sess:
            try:
                value = int(sess.run(largest))
            except tf.errors.OpError as error:
                raise read_error(source, error) from None
    if value < 0:
        raise InputError('no labelled records in %s' % source.description)
    return value


# ---------------------------------------------------------------- pipelines

def _records(files, deterministic=True, shuffle_seed=None, repeat=False):
    """Records interleaved across `files` (name, index in file) included."""
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if repeat:   # training: the file order changes every epoch
        dataset = dataset.shuffle(len(files), seed=shuffle_seed,
                                  reshuffle_each_iteration=True).repeat()
    return dataset.interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), CYCLE_LENGTH),
        num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def _parse(record, strict=True):
    """(encoded, label) of a slim record; with `strict=False` missing keys
    give '' and -1 instead of an error."""
    features = tf.io.parse_single_example(record, {
        ENCODED: tf.io.FixedLenFeature(
            [], tf.string, default_value=None if strict else ''),
        LABEL: tf.io.FixedLenFeature(
            [], tf.int64, default_value=None if strict else -1)})
    return features[ENCODED], features[LABEL]


def _cut(dataset, shard, num_shards, max_images):
    """The first `max_images`, then every `num_shards`-th from `shard`."""
    if max_images:
        dataset = dataset.take(max_images)
    if num_shards:
        dataset = dataset.shard(num_shards, shard)
    return dataset


def shard_size(count, shard=None, num_shards=None, max_images=None):
    """How many of `count` examples `_cut` keeps."""
    if max_images:
        count = min(count, max_images)
    return len(range(shard or 0, count, num_shards or 1))


def _encoded_stream(source, strict=True, shard=None, num_shards=None,
                    max_images=None):
    """(encoded bytes, label) in a stable order, sharded and cut."""
    if source.kind == 'folder':
        dataset = tf.data.Dataset.from_tensor_slices(
            (source.files, np.array(source.labels, np.int64)))
        return _cut(dataset, shard, num_shards, max_images).map(
            lambda path, label: (tf.io.read_file(path), label),
            num_parallel_calls=AUTOTUNE)
    dataset = _cut(_records(source.files), shard, num_shards, max_images)
    return dataset.map(lambda record: _parse(record, strict),
                       num_parallel_calls=AUTOTUNE)


def _names(source, shard=None, num_shards=None, max_images=None):
    """Names of the examples of `_encoded_stream`, in the same order (a
    path, or 'FILE record K'), as a Python generator."""
    if source.kind == 'folder':
        names = source.files[:max_images] if max_images else source.files
        yield from names[shard or 0::num_shards or 1]
        return
    dataset = tf.data.Dataset.from_tensor_slices(source.files).interleave(
        lambda path: tf.data.TFRecordDataset(path).enumerate().map(
            lambda index, _: (path, index)),
        cycle_length=min(len(source.files), CYCLE_LENGTH),
        num_parallel_calls=AUTOTUNE, deterministic=True)
    for path, index in iterate(_cut(dataset, shard, num_shards, max_images)):
        yield '%s record %d' % (path.decode(), index)


def iterate(dataset):
    """numpy values of a dataset, from a session on the current graph."""
    next_value = tf.data.make_one_shot_iterator(dataset).get_next()
    # Not `with tf.Session()`: a generator must not hold a default-graph
    # context while its caller enters others.
    sess = tf.Session(graph=next_value[0].graph if isinstance(
        next_value, tuple) else next_value.graph)
    try:
        while True:
            try:
                yield preprocessing.run_decoding(sess, next_value)
            except tf.errors.OutOfRangeError:
                return
    finally:
        sess.close()


def _size_ok(max_pixels):
    def check(data):
        try:
            check_image(data, 'image', max_pixels)
        except InputError:
            return False
        return True
    return lambda encoded: tf.numpy_function(check, [encoded], tf.bool,
                                             stateful=False)


def evaluation_dataset(source, image_size, batch_size, max_images=None,
                       shard=None, num_shards=None, max_pixels=MAX_PIXELS):
    """Batches (images [B, size, size, 3] in [-1, 1], labels [B] int64),
    eval-preprocessed in the current graph (Inception eval preprocessing,
    as `Classifier` applies it); the last batch may be smaller.

    Images whose header names more than `max_pixels` pixels, or which
    cannot be decoded, fail the iterator; `explain_failure` names them.
    """
    size_ok = _size_ok(max_pixels) if max_pixels else None

    def preprocess(encoded, label):
        checks = []
        if size_ok is not None:
            checks.append(tf.debugging.Assert(size_ok(encoded), [
                'an image is larger than max_pixels']))
        with tf.control_dependencies(checks):
            image = preprocessing.decode_and_preprocess(encoded, image_size)
        return image, label

    dataset = _encoded_stream(source, True, shard, num_shards, max_images)
    dataset = dataset.map(preprocess, num_parallel_calls=AUTOTUNE)
    return dataset.batch(batch_size).prefetch(AUTOTUNE)


def explain_failure(source, error, check, batch_size=32, shard=None,
                    num_shards=None, max_images=None):
    """The InputError for a failed evaluation stream: reads the raw stream
    again and hands each batch of (encoded images, names) to `check` (which
    raises InputError naming a bad image); a record without image/encoded
    or image/class/label is named here.
    """
    with tf.Graph().as_default():
        dataset = _encoded_stream(source, False, shard, num_shards,
                                  max_images).batch(batch_size)
        names = _names(source, shard, num_shards, max_images)
        try:
            for encoded, labels in iterate(dataset):
                batch_names = [next(names) for _ in range(len(encoded))]
                for name, data, label in zip(batch_names, encoded, labels):
                    if not data or label < 0:
                        raise InputError(
                            '%s is not a slim image record (needs %s and %s)'
                            % (name, ENCODED, LABEL))
                check(list(encoded), batch_names)
        except tf.errors.OpError as again:
            return read_error(source, again)
    return read_error(source, error)


def tf_message(error):
    """The informative line of a TensorFlow error message."""
    lines = [line.strip() for line in (getattr(error, 'message', None) or
                                       str(error)).splitlines()]
    lines = [line for line in lines if line and not line.startswith(
        ('[[', 'Graph execution error', 'Detected at node', 'Original stack',
         'File ', 'Node:'))]
    return lines[0] if lines else type(error).__name__


def read_error(source, error):
    """An InputError for a failed read of `source`; a damaged TFRecord
    file is found (record headers checked) and named."""
    if isinstance(error, tf.errors.DataLossError) and \
            source.kind == 'records':
        for path in source.files:
            count_records(path)      # a header or length: raises, naming it
            found = damaged_record(path)
            if found is not None:
                return InputError('%s record %d is damaged (%s); %s' % (
                    path, found[0], found[1], REBUILD))
        return InputError('a TFRecord file in %s is damaged (%s); rebuild it'
                          % (source.description, tf_message(error)))
    return InputError('reading %s failed: %s' % (source.description,
                                                 tf_message(error)))


def training_dataset(source, image_size, batch_size, seed=None,
                     shuffle_buffer=SHUFFLE_BUFFER, shard=None,
                     num_shards=None):
    """Endless batches (images [B, size, size, 3], labels [B] int64) with
    Inception train preprocessing, shuffled (file list, then a buffer of
    `shuffle_buffer` examples), decoded in parallel and prefetched.

    With `num_shards` (the workers of a cluster), only shard `shard`: every
    `num_shards`-th image of a folder tree, or of the TFRecord files (of
    the records, in file order, when there are fewer files than shards).
    """
    if source.kind == 'folder':
        files, labels = source.files, source.labels
        if num_shards:
            files = files[shard::num_shards]
            labels = labels[shard::num_shards]
            if not files:
                raise InputError('%s has %d images: too few for %d workers'
                                 % (source.description, len(source.files),
                                    num_shards))
        dataset = tf.data.Dataset.from_tensor_slices(
            (files, np.array(labels, np.int64)))
        # Paths are small: the whole list is reshuffled every epoch.
        dataset = dataset.shuffle(len(files), seed=seed,
                                  reshuffle_each_iteration=True).repeat()
        dataset = dataset.map(
            lambda path, label: (tf.io.read_file(path), label),
            num_parallel_calls=AUTOTUNE)
    elif num_shards and len(source.files) < num_shards:
        dataset = tf.data.TFRecordDataset(source.files).shard(
            num_shards, shard).repeat()
        dataset = dataset.shuffle(shuffle_buffer, seed=seed,
                                  reshuffle_each_iteration=True)
        dataset = dataset.map(_parse, num_parallel_calls=AUTOTUNE)
    else:
        files = source.files[shard::num_shards] if num_shards \
            else source.files
        dataset = _records(files, deterministic=seed is not None,
                           shuffle_seed=seed, repeat=True)
        dataset = dataset.shuffle(shuffle_buffer, seed=seed,
                                  reshuffle_each_iteration=True)
        dataset = dataset.map(_parse, num_parallel_calls=AUTOTUNE)

    def preprocess(encoded, label):
        image = tf.io.decode_image(encoded, channels=3,
                                   expand_animations=False)
        image.set_shape([None, None, 3])
        return preprocessing.preprocess_for_train(
            image, image_size, image_size), label

    dataset = dataset.map(preprocess, num_parallel_calls=AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def evaluation_examples(data, num_classes, class_names=None):
    """[(encoded bytes or path, label)] of evaluation data, all in memory
    (small datasets; `evaluation_dataset` streams)."""
    source = evaluation_source(data, num_classes, class_names)
    if source.kind == 'folder':
        return list(zip(source.files, source.labels))
    with tf.Graph().as_default():
        examples = []
        names = _names(source)
        for encoded, label in iterate(_encoded_stream(source, False)):
            name = next(names)
            if not encoded or label < 0:
                raise InputError('%s is not a slim image record (needs %s '
                                 'and %s)' % (name, ENCODED, LABEL))
            examples.append((encoded, int(label)))
    return examples
