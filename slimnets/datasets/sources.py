"""Where labelled images come from: a class-folder tree, slim TFRecords or
research/slim's dataset_dir with a split (see `slimnets.datasets`).

Only the file list is held (image paths, or TFRecord files): a `Source`
names the files, their labels (class folders) and the class names.
"""

import logging
import os

import tensorflow.compat.v1 as tf

from slimnets import labels as labels_lib
from slimnets.datasets.records import AUTOTUNE
from slimnets.datasets.records import check_record_file
from slimnets.datasets.records import count_records
from slimnets.datasets.records import is_record_name
from slimnets.datasets.records import parse_record
from slimnets.datasets.records import read_error
from slimnets.datasets.records import read_records
from slimnets.datasets.records import record_files
from slimnets.errors import InputError
from slimnets.images import IMAGE_EXTENSIONS

__all__ = ['Source', 'BUILD_PLAN_FILE', 'class_tree', 'evaluation_source',
           'training_source']

_log = logging.getLogger(__name__)

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
    return any(is_record_name(n) and os.path.isfile(os.path.join(folder, n))
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
    class_names = labels_lib.class_names(folder)
    source = Source('records', files, description=data)
    if class_names is None:
        _log.info('no labels.txt beside %s: reading every label once', data)
        largest = _largest_label(source)
        class_names = [str(i) for i in range(largest + 1)]
    source.class_names = class_names
    return source


def _largest_label(source):
    with tf.Graph().as_default():
        dataset = read_records(source.files, deterministic=False).map(
            lambda record: parse_record(record)[1], num_parallel_calls=AUTOTUNE)
        largest = dataset.reduce(tf.constant(-1, tf.int64), tf.maximum)
        with tf.Session() as sess:
            try:
                value = int(sess.run(largest))
            except tf.errors.OpError as error:
                raise read_error(source, error) from None
    if value < 0:
        raise InputError('no labelled records in %s' % source.description)
    return value
