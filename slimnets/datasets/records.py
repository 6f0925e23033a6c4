"""The slim TFRecord format: reading, checking and writing records.

A slim image record is a `tf.train.Example` with `image/encoded` (the
encoded file) and `image/class/label` (int64), plus the size, colour space,
format, synset, class text and file name that research/slim's converters
(`build_imagenet_data.py`, `download_and_convert_flowers.py`) store.  Shards
are named `SPLIT-NNNNN-of-NNNNN`.  This module reads record headers without
parsing (counting, finding a damaged record), streams records through
tf.data, and builds the Example of one image.
"""

import glob
import logging
import os
import struct

import tensorflow.compat.v1 as tf
from tensorflow.python.util import deprecation  # pylint: disable=g-direct-tensorflow-import

from slimnets import images
from slimnets.errors import InputError

__all__ = ['ENCODED', 'LABEL', 'REBUILD', 'AUTOTUNE', 'CYCLE_LENGTH',
           'damaged_record', 'count_records', 'check_record_file',
           'is_record_name', 'record_files', 'read_records', 'parse_record',
           'tf_message', 'read_error', 'shard_name', 'image_example']

_log = logging.getLogger(__name__)

AUTOTUNE = tf.data.experimental.AUTOTUNE
_COLORSPACES = {1: 'Grayscale', 2: 'Grayscale', 3: 'RGB', 4: 'RGB'}

CYCLE_LENGTH = 8              # TFRecord shards read at once


ENCODED, LABEL = 'image/encoded', 'image/class/label'


REBUILD = ('rebuild that file (slimnets data build), or leave it out of '
           '--data')


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


def is_record_name(name):
    """A TFRecord file's name (hidden files, such as `data build`'s
    `.NAME.done` records and temporaries, are not)."""
    return not name.startswith('.') and ('.tfrecord' in name or
                                         '-of-' in name)


def _split_files(folder, split):
    """research/slim's files of one split in a dataset_dir."""
    names = sorted(os.listdir(folder))
    return [os.path.join(folder, n) for n in names if
            not n.startswith('.') and os.path.isfile(os.path.join(folder, n))
            and (n.startswith(split + '-') or ('_%s_' % split) in n
                 or n.endswith('_%s.tfrecord' % split))]


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
                     if is_record_name(n) and
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


def read_records(files, deterministic=True, shuffle_seed=None, repeat=False):
    """Records interleaved across `files` (name, index in file) included."""
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if repeat:   # training: the file order changes every epoch
        dataset = dataset.shuffle(len(files), seed=shuffle_seed,
                                  reshuffle_each_iteration=True).repeat()
    return dataset.interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), CYCLE_LENGTH),
        num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def parse_record(record, strict=True):
    """(encoded, label) of a slim record; with `strict=False` missing keys
    give '' and -1 instead of an error."""
    features = tf.io.parse_single_example(record, {
        ENCODED: tf.io.FixedLenFeature(
            [], tf.string, default_value=None if strict else ''),
        LABEL: tf.io.FixedLenFeature(
            [], tf.int64, default_value=None if strict else -1)})
    return features[ENCODED], features[LABEL]


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


def shard_name(split, index, count):
    """research/slim's shard name, e.g. 'train-00002-of-00010'."""
    return '%s-%.5d-of-%.5d' % (split, index, count)


def _bytes(value):
    if isinstance(value, str):
        value = value.encode('utf-8')
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def image_example(data, label, synset, text, filename):
    """A serialized `tf.train.Example` of encoded image bytes, or None when
    the header is not JPEG, PNG, GIF or BMP."""
    image_format = images.image_format(data)
    size = images.header_size(data) if image_format else None
    if size is None:
        return None
    width, height = size
    channels = images.header_channels(data)
    colorspace = 'CMYK' if image_format == 'JPEG' and channels == 4 else \
        _COLORSPACES.get(channels, 'RGB')
    return tf.train.Example(features=tf.train.Features(feature={
        'image/height': _int64(height), 'image/width': _int64(width),
        'image/colorspace': _bytes(colorspace),
        'image/channels': _int64(channels),
        'image/class/label': _int64(label),
        'image/class/synset': _bytes(synset),
        'image/class/text': _bytes(text),
        'image/format': _bytes(image_format),
        'image/filename': _bytes(filename),
        'image/encoded': _bytes(data)})).SerializeToString()
