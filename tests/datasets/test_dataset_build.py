"""`slimnets data build`: class folders to research/slim ImageNet-format
TFRecord shards, resumable shard by shard, nothing half-written."""

import os

import numpy as np
import pytest
import tensorflow as tf2

from slimnets import labels as labels_lib
from slimnets.datasets import builder as dataset_build


def _png(rng, height, width, channels=3):
    pixels = rng.randint(0, 255, (height, width, channels)).astype(np.uint8)
    return tf2.io.encode_png(pixels).numpy()


def _jpeg(rng, height, width, channels=3):
    pixels = rng.randint(0, 255, (height, width, channels)).astype(np.uint8)
    return tf2.io.encode_jpeg(pixels).numpy()


def _records(path):
    out = []
    for record in tf2.data.TFRecordDataset(path):
        feature = tf2.train.Example.FromString(record.numpy()).features.feature
        out.append(feature)
    return out


def _value(feature, key):
    kind = feature[key].WhichOneof('kind')
    value = getattr(feature[key], kind).value[0]
    if isinstance(value, bytes) and key != 'image/encoded':
        return value.decode()
    return value


@pytest.fixture(scope='module')
def class_tree(tmp_path_factory):
    """daisy: 6 PNGs (20x10), rose: 5 JPEGs (12x16, one greyscale),
    tulip: 4 PNGs; plus a damaged file and a non-image."""
    root = tmp_path_factory.mktemp('flowers')
    rng = np.random.RandomState(0)
    for name, count in (('daisy', 6), ('rose', 5), ('tulip', 4)):
        os.makedirs(root / name)
        for index in range(count):
            if name == 'rose':
                data = _jpeg(rng, 12, 16, 1 if index == 0 else 3)
                (root / name / ('%d.jpg' % index)).write_bytes(data)
            else:
                (root / name / ('%d.png' % index)).write_bytes(
                    _png(rng, 20, 10))
    (root / 'tulip' / 'broken.png').write_bytes(b'not an image at all')
    (root / 'tulip' / 'notes.txt').write_text('ignored: not an image name')
    return root


def test_build_writes_slim_imagenet_shards(class_tree, tmp_path, cli):
    output = tmp_path / 'records'
    completed = cli('data', 'build', '--input', class_tree, '--output', output,
                    '--shards', '2', '--validation-fraction', '0.25',
                    '--no-progress')
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert 'classes: 3 (class folders in sorted order from 0)' in \
        completed.stdout
    assert 'skipped: 1' in completed.stdout
    assert 'broken.png: not a JPEG, PNG, GIF or BMP image' in completed.stdout
    names = sorted(n for n in os.listdir(output) if not n.startswith('.'))
    assert names == ['labels.txt', 'train-00000-of-00002',
                     'train-00001-of-00002', 'validation-00000-of-00001']
    assert (output / 'labels.txt').read_text() == '0:daisy\n1:rose\n2:tulip\n'

    by_split = {}
    for name in names[1:]:
        features = _records(str(output / name))
        assert features, name
        by_split.setdefault(name.split('-')[0], []).extend(features)
    # Per class, round(0.25 n) go to validation: daisy 2 (of 6), rose 1
    # (of 5), tulip 1 (of 5 files, one unreadable).
    assert len(by_split['validation']) + len(by_split['train']) == 15
    files = [(_value(f, 'image/class/synset'), _value(f, 'image/filename'))
             for split in by_split.values() for f in split]
    assert len(set(files)) == 15
    keys = {'image/encoded', 'image/format', 'image/class/label',
            'image/class/synset', 'image/class/text', 'image/height',
            'image/width', 'image/colorspace', 'image/channels',
            'image/filename'}
    for feature in by_split['train'] + by_split['validation']:
        assert keys <= set(feature.keys())
        synset = _value(feature, 'image/class/synset')
        assert _value(feature, 'image/class/label') == \
            ['daisy', 'rose', 'tulip'].index(synset)
        assert _value(feature, 'image/class/text') == synset
        image = tf2.io.decode_image(_value(feature, 'image/encoded')).numpy()
        # Sizes and channels came from the header; they match the decode.
        assert (_value(feature, 'image/height'),
                _value(feature, 'image/width'),
                _value(feature, 'image/channels')) == image.shape
        assert _value(feature, 'image/format') == (
            'JPEG' if synset == 'rose' else 'PNG')
        assert _value(feature, 'image/colorspace') == (
            'Grayscale' if image.shape[2] == 1 else 'RGB')
    assert ('tulip', 'broken.png') not in files
    counts = {}
    for feature in by_split['validation']:
        synset = _value(feature, 'image/class/synset')
        counts[synset] = counts.get(synset, 0) + 1
    assert counts == {'daisy': 2, 'rose': 1, 'tulip': 1}


def test_imagenet_synsets_are_numbered_as_build_imagenet_data(tmp_path):
    rng = np.random.RandomState(1)
    for synset in ('n02123159', 'n01440764'):   # tiger cat 283, tench 1
        os.makedirs(tmp_path / 'in' / synset)
        (tmp_path / 'in' / synset / 'a.png').write_bytes(_png(rng, 8, 8))
    report = dataset_build.build(str(tmp_path / 'in'), str(tmp_path / 'out'),
                                 shards=1, validation_fraction=0,
                                 progress=False)
    assert report.numbering == 'imagenet'
    assert report.labels == {'n01440764': 1, 'n02123159': 283}
    assert report.shards == {'train': ['train-00000-of-00001'],
                             'validation': []}
    features = _records(str(tmp_path / 'out' / 'train-00000-of-00001'))
    texts = {_value(f, 'image/class/label'): _value(f, 'image/class/text')
             for f in features}
    assert texts == {1: 'tench, Tinca tinca', 283: 'tiger cat'}
    # A labels file in the plain form numbers in its order from 1 (the
    # build_imagenet_data labels_file); the 'label:name' form as written.
    labels = tmp_path / 'synsets.txt'
    labels.write_text('n02123159\nn01440764\n')
    assert dataset_build.class_labels(['n01440764', 'n02123159'], str(
        labels)) == ({'n02123159': 1, 'n01440764': 2}, 'imagenet')
    labels.write_text('7:n01440764\n3:n02123159\n')
    assert dataset_build.class_labels([], str(labels)) == (
        {'n01440764': 7, 'n02123159': 3}, 'labels_file')


def test_rerun_skips_finished_shards_and_refuses_another_build(
        class_tree, tmp_path, cli, one_line_error):
    output = str(tmp_path / 'records')
    first = dataset_build.build(str(class_tree), output, shards=3,
                                validation_fraction=0.2, progress=False)
    assert (first.shards_written, first.shards_reused) == (4, 0)
    stamps = {n: os.stat(os.path.join(output, n)).st_mtime_ns
              for n in first.shards['train']}
    # A shard lost (as after a crash before it was renamed) is redone alone.
    lost = first.shards['train'][1]
    os.remove(os.path.join(output, lost))
    second = dataset_build.build(str(class_tree), output, shards=3,
                                 validation_fraction=0.2, progress=False)
    assert (second.shards_written, second.shards_reused) == (1, 3)
    assert second.records == first.records
    assert second.skipped == first.skipped
    for name, stamp in stamps.items():
        if name != lost:
            assert os.stat(os.path.join(output, name)).st_mtime_ns == stamp
    completed = cli('data', 'build', '--input', class_tree, '--output',
                    output, '--shards', '2', '--no-progress')
    one_line_error(completed, 'holds a build of other images or options')


def test_an_interrupted_build_leaves_nothing_under_a_final_name(
        class_tree, tmp_path, monkeypatch):
    output = tmp_path / 'records'
    calls = []
    original = dataset_build.image_example

    def failing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(dataset_build, 'image_example', failing)
    with pytest.raises(KeyboardInterrupt):
        dataset_build.build(str(class_tree), str(output), shards=1,
                            validation_fraction=0, workers=1, progress=False)
    assert sorted(os.listdir(output)) == [dataset_build.PLAN_FILE]
    monkeypatch.setattr(dataset_build, 'image_example', original)
    report = dataset_build.build(str(class_tree), str(output), shards=1,
                                 validation_fraction=0, progress=False)
    assert report.records == {'train': 15, 'validation': 0}


def test_command_line_errors(tmp_path, cli, one_line_error):
    one_line_error(cli('data', 'build', '--input', tmp_path / 'missing',
                       '--output', tmp_path / 'out'),
                   'is not a folder of class folders')
    (tmp_path / 'empty').mkdir()
    one_line_error(cli('data', 'build', '--input', tmp_path / 'empty',
                       '--output', tmp_path / 'out'), 'has no class sub-folders')
    one_line_error(cli('data', 'build', '--input', tmp_path, '--output',
                       tmp_path / 'out', '--validation-fraction', '1'),
                   'must be below 1', status=2)


def test_a_failed_write_is_an_output_error(class_tree, tmp_path,
                                           monkeypatch):
    def full_disk(*args):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(dataset_build, '_write_shard', full_disk)
    with pytest.raises(dataset_build.OutputError,
                       match='No space left on device'):
        dataset_build.build(str(class_tree), str(tmp_path / 'out'),
                            progress=False)


def test_labels_txt_has_one_home(tmp_path):
    """`slimnets.labels` writes research/slim's 'label:name' lines and reads
    them, plain names a line (older `slimnets train` folders), with or
    without a byte-order mark; a missing label of a 'label:name' file is
    'background' at 0, else its number."""
    labels_lib.write_labels_file(str(tmp_path), ['daisy', 'tulip'])
    assert (tmp_path / 'labels.txt').read_text() == '0:daisy\n1:tulip\n'
    assert labels_lib.class_names(str(tmp_path)) == ['daisy', 'tulip']
    labels_lib.write_labels_file(str(tmp_path), {1: 'cat', 3: 'dog'})
    assert labels_lib.class_names(str(tmp_path)) == [
        'background', 'cat', '2', 'dog']
    (tmp_path / 'labels.txt').write_bytes(b'\xef\xbb\xbfred\ngreen\n')
    assert labels_lib.class_names(str(tmp_path)) == ['red', 'green']
    (tmp_path / 'labels.txt').write_bytes(b'')
    assert labels_lib.class_names(str(tmp_path)) is None
    assert labels_lib.class_names(str(tmp_path / 'nowhere')) is None
