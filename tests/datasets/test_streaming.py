"""Streaming input: every accepted layout (class folders, a TFRecord file,
a folder of shards, a glob, research/slim's dataset_dir + split), one-line
errors for bad records, sharded evaluation merged exactly, and training
from TFRecord shards with their labels.txt."""

import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf2

from slimnets import datasets
from slimnets import training
from slimnets.datasets import builder as dataset_build
from slimnets.errors import InputError
from slimnets.inference.classifier import Classifier

import reference

IMAGES = ('cat.bmp', 'grace_hopper.bmp', 'bird.bmp')


def _example(encoded, label=None):
    feature = {}
    if encoded is not None:
        feature['image/encoded'] = tf2.train.Feature(
            bytes_list=tf2.train.BytesList(value=[encoded]))
    if label is not None:
        feature['image/class/label'] = tf2.train.Feature(
            int64_list=tf2.train.Int64List(value=[label]))
    return tf2.train.Example(features=tf2.train.Features(
        feature=feature)).SerializeToString()


def _write(path, examples):
    with tf2.io.TFRecordWriter(str(path)) as writer:
        for example in examples:
            writer.write(example)
    return str(path)


def _checkpoint():
    return reference.require(os.path.join(
        reference.PRETRAINED, 'mobilenet_v1', '0.25_128',
        'model.ckpt.index'))[:-len('.index')]


@pytest.fixture(scope='module')
def encoded_images():
    return [open(reference.require(os.path.join(reference.PRETRAINED, n)),
                 'rb').read() for n in IMAGES]


# (image, label) of 11 records: some labels are the image's top-1 for v1
# 0.25_128, some in its top-5 only, some nowhere.
LABELLED = [(0, 283), (2, 17), (1, 1), (0, 286), (2, 20), (1, 653), (0, 5),
            (2, 19), (1, 401), (0, 282), (2, 132)]


@pytest.fixture(scope='module')
def eleven_records(tmp_path_factory, encoded_images):
    """The LABELLED records in 3 shards (4, 5 and 2 records)."""
    root = tmp_path_factory.mktemp('records')
    examples = [_example(encoded_images[i], label) for i, label in LABELLED]
    for index, part in enumerate((examples[:4], examples[4:9], examples[9:])):
        _write(root / ('validation-%05d-of-00003' % index), part)
    return str(root)


def test_layouts_are_resolved(tmp_path):
    empty = _example(b'x', 0)
    for name in ('train-00000-of-00002', 'train-00001-of-00002',
                 'validation-00000-of-00001', 'flowers_train_00000-of-00005'
                 '.tfrecord', 'cifar10_test.tfrecord'):
        _write(tmp_path / name, [empty])
    folder = str(tmp_path)
    names = lambda files: [os.path.basename(f) for f in files]  # noqa: E731
    assert names(datasets.record_files(folder, 'train')) == [
        'flowers_train_00000-of-00005.tfrecord', 'train-00000-of-00002',
        'train-00001-of-00002']
    assert names(datasets.record_files(folder, 'test')) == [
        'cifar10_test.tfrecord']
    # Several splits and none named: evaluation reads validation, training
    # train.
    assert names(datasets.record_files(folder, None, ('validation',))) == [
        'validation-00000-of-00001']
    assert len(datasets.record_files(folder, None, ('train',))) == 3
    assert names(datasets.record_files(folder + '/train-*')) == [
        'train-00000-of-00002', 'train-00001-of-00002']
    single = folder + '/cifar10_test.tfrecord'
    assert datasets.record_files(single) == [single]
    assert datasets.count_records(single) == 1
    with pytest.raises(InputError, match='has no mnist split'):
        datasets.record_files(folder, 'mnist')
    with pytest.raises(InputError, match='no files match'):
        datasets.record_files(folder + '/nothing-*')


def test_a_file_that_is_not_a_tfrecord_is_named(tmp_path, encoded_images):
    good = _write(tmp_path / 'a.tfrecord', [_example(encoded_images[0], 1)])
    bad = tmp_path / 'b.tfrecord'
    bad.write_bytes(encoded_images[1][:100])
    with pytest.raises(InputError,
                       match=re.escape('%s is not a TFRecord file' % bad)):
        datasets.evaluation_source(str(tmp_path), 1001)
    # Cut short after a good record.
    data = open(good, 'rb').read()
    bad.write_bytes(data + data[:40])
    with pytest.raises(InputError, match='is cut short'):
        datasets.training_source(str(tmp_path))


def test_eval_reads_every_layout_alike(eleven_records, encoded_images,
                                      tmp_path, cli):
    results = {}
    glob_data = os.path.join(eleven_records, 'validation-*')
    single = _write(tmp_path / 'one.tfrecord', [
        r.numpy() for r in tf2.data.TFRecordDataset(
            sorted(os.path.join(eleven_records, n)
                   for n in os.listdir(eleven_records)))])
    for name, data in (('folder', eleven_records), ('glob', glob_data),
                       ('file', single)):
        output = tmp_path / (name + '.json')
        completed = cli('eval', '--checkpoint', _checkpoint(), '--data', data,
                        '--batch-size', '4', '--no-progress', '--json', output)
        assert completed.returncode == 0, completed.stderr[-2000:]
        results[name] = json.loads(output.read_text())
    counts = {(r['images'], r['top1_count'], r['top5_count'])
              for r in results.values()}
    assert len(counts) == 1, results
    # The same counts from the Classifier's own top-5 of each image.
    with Classifier(_checkpoint()) as classifier:
        top = [[index for index, _, _ in ranked] for _, ranked in
               classifier.classify_files([reference.require(os.path.join(
                   reference.PRETRAINED, n)) for n in IMAGES])]
    expected = (len(LABELLED),
                sum(top[i][0] == label for i, label in LABELLED),
                sum(label in top[i] for i, label in LABELLED))
    assert counts.pop() == expected
    # The in-memory list (small data) reads the same records.
    examples = datasets.evaluation_examples(single, 1001)
    assert [label for _, label in examples] == [y for _, y in LABELLED]
    assert examples[0][0] == encoded_images[0]
    assert 0 < expected[1] < expected[2] < expected[0]


def test_three_shards_merged_equal_the_single_process_eval(
        eleven_records, tmp_path, cli, one_line_error):
    whole = tmp_path / 'whole.json'
    common = ('--checkpoint', _checkpoint(), '--data', eleven_records,
              '--batch-size', '2', '--max-images', '10', '--no-progress')
    assert cli('eval', *common, '--json', whole).returncode == 0
    parts = []
    for shard in range(3):
        parts.append(tmp_path / ('part%d.json' % shard))
        completed = cli('eval', *common, '--shard', shard, '--num-shards', 3,
                        '--json', parts[-1])
        assert completed.returncode == 0, completed.stderr[-2000:]
        assert re.search(r'^shard\s+%d of 3$' % shard, completed.stdout, re.M)
    sizes = [json.loads(p.read_text())['images'] for p in parts]
    assert sizes == [4, 3, 3]
    merged = tmp_path / 'merged.json'
    completed = cli('eval', '--merge', *parts, '--json', merged)
    assert completed.returncode == 0, completed.stderr[-2000:]
    single, combined = json.loads(whole.read_text()), json.loads(
        merged.read_text())
    for key in ('images', 'top1_count', 'top5_count', 'top1', 'top5'):
        assert combined[key] == single[key], key
    assert single['images'] == 10
    top1 = re.search(r'^top-1\s+(\S+)$', completed.stdout, re.M).group(1)
    assert float(top1) == pytest.approx(single['top1'], abs=1e-4)

    one_line_error(cli('eval', '--merge', parts[0], parts[2]),
                   'missing: [1]')
    one_line_error(cli('eval', '--merge', parts[0], parts[0], parts[1],
                       parts[2]), 'repeated: [0]')
    other = json.loads(parts[1].read_text())
    other['checkpoint'] = 'another'
    (tmp_path / 'other.json').write_text(json.dumps(other))
    one_line_error(cli('eval', '--merge', parts[0], tmp_path / 'other.json',
                       parts[2]), 'checkpoint differ')
    one_line_error(cli('eval', '--merge', whole), 'not from a sharded')


def test_bad_records_are_named_on_one_line(tmp_path, encoded_images, cli,
                                           one_line_error):
    cases = {
        'damaged': [_example(encoded_images[0], 1),
                    _example(b'not an image', 2)],
        'unlabelled': [_example(encoded_images[0], 1),
                       _example(encoded_images[1])],
    }
    for name, examples in cases.items():
        path = _write(tmp_path / (name + '.tfrecord'), examples)
        completed = cli('eval', '--checkpoint', _checkpoint(), '--data', path,
                        '--no-progress')
        if name == 'damaged':
            one_line_error(completed, 'cannot decode image %s record 1' % path)
        else:
            one_line_error(completed, '%s record 1 is not a slim image record'
                           % path)
    text = tmp_path / 'notes.tfrecord'
    text.write_text('hello, I am text\n' * 3)
    one_line_error(cli('eval', '--checkpoint', _checkpoint(), '--data', text),
                   'is not a TFRecord file')
    # A header naming too many pixels is refused before decoding.
    large = _write(tmp_path / 'large.tfrecord',
                   [_example(encoded_images[0], 1)])
    one_line_error(cli('eval', '--checkpoint', _checkpoint(), '--data', large,
                       '--max-pixels', '1000', '--no-progress'),
                   '%s record 0 is' % large, 'raise --max-pixels')


def test_build_then_eval_and_train_from_a_dataset_dir(
        tmp_path, encoded_images, cli):
    """`data build` on synset folders; eval reads its validation split by
    default and the train split when asked; training reads the train
    shards with the class names of its labels.txt."""
    tree = tmp_path / 'tree'
    for synset, image in (('n02123159', 0), ('n01530575', 2)):  # tiger cat,
        os.makedirs(tree / synset)                               # brambling
        for copy in range(5):
            (tree / synset / ('%d.bmp' % copy)).write_bytes(
                encoded_images[image])
    output = str(tmp_path / 'records')
    report = dataset_build.build(str(tree), output, shards=2,
                                 validation_fraction=0.2, progress=False)
    assert report.records == {'train': 8, 'validation': 2}
    evaluated = cli('eval', '--checkpoint', _checkpoint(), '--data', output,
                    '--no-progress')
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert re.search(r'^images\s+2$', evaluated.stdout, re.M)
    assert re.search(r'^top-1\s+0\.5000$', evaluated.stdout, re.M)
    trained = cli('eval', '--checkpoint', _checkpoint(), '--data', output,
                  '--split', 'train', '--no-progress')
    assert re.search(r'^images\s+8$', trained.stdout, re.M)

    names = datasets.training_source(output).class_names
    assert len(names) == 284 and names[0] == 'background' and \
        names[283] == 'n02123159' and names[11] == 'n01530575'
    # A flowers-numbered build trains on its own class names.
    flowers = tmp_path / 'flowers'
    for name in ('daisy', 'rose'):
        shutil.copytree(tree / 'n02123159', flowers / name)
    dataset_build.build(str(flowers), str(tmp_path / 'fr'), shards=2,
                        validation_fraction=0.2, progress=False)
    result = training.train(
        str(tmp_path / 'run'), str(tmp_path / 'fr'),
        checkpoint=_checkpoint(), max_steps=2, batch_size=4, image_size=64,
        fine_tune_batch_norm=False, progress=False, seed=1,
        learning_rate_decay_type='exponential')
    assert result.class_names == ['daisy', 'rose']
    assert result.last_step == 2 and np.all(np.isfinite(result.losses))
