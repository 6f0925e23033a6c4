"""Labelled images for evaluation and training: class folders or TFRecords.

A class-folder tree has one sub-folder per class (an ImageNet synset id or
label name, or a name in a fine-tuned model's labels.txt); slim TFRecords
carry `image/encoded` and `image/class/label`.
"""

import glob
import os

import tensorflow.compat.v1 as tf

from slimnets import labels as labels_lib
from slimnets.errors import InputError
from slimnets.images import IMAGE_EXTENSIONS


def _folder_examples(folder, num_classes, class_names=None):
    """[(path, label)] from one sub-folder per class (synset or name).

    With `class_names` (a fine-tuned model's labels.txt) the folder names
    index into them; otherwise into the ImageNet labels.
    """
    examples = []
    classes = sorted(d for d in os.listdir(folder)
                     if os.path.isdir(os.path.join(folder, d)))
    if not classes:
        raise InputError('%s has no class sub-folders (expected one folder '
                         'per class, named by synset id or label name)'
                         % folder)
    for class_name in classes:
        try:
            if class_names is not None and num_classes not in (1000, 1001):
                label = class_names.index(class_name)
            else:
                label = labels_lib.label_index(class_name, num_classes)
        except (KeyError, ValueError):
            raise InputError('class folder %r in %s is not one of the '
                             "model's classes (an ImageNet synset id or label "
                             'name, or a name in its labels.txt)'
                             % (class_name, folder)) from None
        for name in sorted(os.listdir(os.path.join(folder, class_name))):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                examples.append((os.path.join(folder, class_name, name), label))
    return examples


def _tfrecord_examples(files):
    """[(encoded bytes, label)] from slim-format TFRecords."""
    examples = []
    for path in files:
        for record in tf.io.tf_record_iterator(path):
            example = tf.train.Example.FromString(record)
            feature = example.features.feature
            if 'image/encoded' not in feature or \
                    'image/class/label' not in feature:
                raise InputError('%s is not a slim image TFRecord (needs '
                                 'image/encoded and image/class/label)' % path)
            examples.append((feature['image/encoded'].bytes_list.value[0],
                             int(feature['image/class/label'].int64_list.value[0])))
    return examples


def evaluation_examples(data, num_classes, class_names=None):
    """[(encoded bytes or path, label)] from a class-folder tree or TFRecords."""
    if os.path.isdir(data):
        records = sorted(glob.glob(os.path.join(data, '*.tfrecord*')) +
                         glob.glob(os.path.join(data, '*-of-*')))
        if records:
            return _tfrecord_examples(records)
        return _folder_examples(data, num_classes, class_names)
    if os.path.isfile(data):
        return _tfrecord_examples([data])
    raise InputError('no evaluation data at %s' % data)


def training_examples(data):
    """([(path or bytes, label)], class names) for a training set.

    A folder of class folders gives labels in the sorted order of the
    folder names; slim TFRecords carry their own labels (names '0', '1'...).
    """
    if os.path.isdir(data) and not any(
            n.endswith('.tfrecord') or '-of-' in n for n in os.listdir(data)):
        classes = sorted(d for d in os.listdir(data)
                         if os.path.isdir(os.path.join(data, d)))
        if not classes:
            raise InputError('%s has no class sub-folders' % data)
        examples = []
        for index, name in enumerate(classes):
            folder = os.path.join(data, name)
            examples.extend((os.path.join(folder, f), index)
                            for f in sorted(os.listdir(folder))
                            if f.lower().endswith(IMAGE_EXTENSIONS))
        return examples, classes
    examples = evaluation_examples(data, num_classes=None)
    count = max(label for _, label in examples) + 1
    return examples, [str(i) for i in range(count)]
