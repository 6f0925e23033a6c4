"""Atomic files and folders (slimnets.fileio) and the exports that use them.

A failure at any point (an exception, Ctrl-C, a full disk, simulated here
by making a write or fsync raise ENOSPC) must leave the final path with its
previous content, and no temporary behind.
"""

import errno
import os
import threading
import time

import pytest
import tensorflow.compat.v1 as tf

from slimnets import errors
from slimnets import export
from slimnets import fileio


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device')


def test_atomic_file_replaces_on_success(tmp_path):
    path = tmp_path / 'out.bin'
    path.write_bytes(b'old')
    fileio.write_bytes(str(path), b'new')
    assert path.read_bytes() == b'new'
    assert os.listdir(tmp_path) == ['out.bin']


@pytest.mark.parametrize('failure', [RuntimeError, KeyboardInterrupt])
def test_atomic_file_keeps_old_content_on_failure(tmp_path, failure):
    path = tmp_path / 'out.bin'
    path.write_bytes(b'good')
    with pytest.raises(failure):
        with fileio.atomic_file(str(path)) as handle:
            handle.write(b'half of the ne')
            raise failure()
    assert path.read_bytes() == b'good'
    assert os.listdir(tmp_path) == ['out.bin']


def test_full_disk_leaves_nothing_behind(tmp_path, monkeypatch):
    path = tmp_path / 'new.bin'
    monkeypatch.setattr(fileio.os, 'fsync', _enospc)
    with pytest.raises(errors.OutputError,
                       match='No space left on device; it is left as it was'):
        fileio.write_bytes(str(path), b'x' * 1000)
    assert os.listdir(tmp_path) == []


def test_atomic_folder_swaps_and_rolls_back(tmp_path):
    path = tmp_path / 'model'
    path.mkdir()
    (path / 'old.txt').write_text('old')
    with pytest.raises(ValueError):
        with fileio.atomic_folder(str(path)) as temporary:
            with open(os.path.join(temporary, 'new.txt'), 'w') as handle:
                handle.write('new')
            raise ValueError('fails half-way')
    assert os.listdir(path) == ['old.txt']
    assert os.listdir(tmp_path) == ['model']
    with fileio.atomic_folder(str(path)) as temporary:
        with open(os.path.join(temporary, 'new.txt'), 'w') as handle:
            handle.write('new')
    assert os.listdir(path) == ['new.txt']
    assert os.listdir(tmp_path) == ['model']


def test_atomic_folder_never_replaces_a_link_or_file(tmp_path):
    (tmp_path / 'elsewhere').mkdir()
    (tmp_path / 'link').symlink_to(tmp_path / 'elsewhere')
    (tmp_path / 'file').write_text('x')
    for name in ('link', 'file'):
        with pytest.raises(errors.InputError, match='not a folder'):
            with fileio.atomic_folder(str(tmp_path / name)):
                pass
    assert sorted(os.listdir(tmp_path)) == ['elsewhere', 'file', 'link']


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / '.out.bin.tmp-999999999-00aa11bb'
    dead.write_bytes(b'x')
    dead_folder = tmp_path / '.model.old-999999999-00aa11bb'
    dead_folder.mkdir()
    (dead_folder / 'inside').write_bytes(b'x')
    live = tmp_path / ('.out.bin.tmp-%d-00aa11bb' % os.getpid())
    live.write_bytes(b'x')
    user = tmp_path / '.out.bin.tmp-notes'
    user.write_bytes(b'x')
    removed = fileio.remove_stale(str(tmp_path))
    assert sorted(removed) == sorted([str(dead), str(dead_folder)])
    assert live.exists() and user.exists()
    # Writing out.bin cleans its own stale temporaries too.
    dead.write_bytes(b'x')
    fileio.write_bytes(str(tmp_path / 'out.bin'), b'y')
    assert not dead.exists()


def test_file_lock_serializes(tmp_path):
    lock = str(tmp_path / '.lock')
    inside, overlaps = [], []

    def work():
        with fileio.file_lock(lock):
            if inside:
                overlaps.append(True)
            inside.append(True)
            time.sleep(0.05)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not overlaps


def _pair(folder, xml=b'<old xml/>', weights=b'old weights'):
    (folder / 'model.xml').write_bytes(xml)
    (folder / 'model.bin').write_bytes(weights)


def test_atomic_files_replace_together(tmp_path):
    _pair(tmp_path)
    with fileio.atomic_files([str(tmp_path / 'model.xml'),
                              str(tmp_path / 'model.bin')]) as (xml, weights):
        assert os.path.dirname(xml) == os.path.dirname(weights)
        assert os.path.basename(xml) == 'model.xml'
        for path, data in ((xml, b'<new/>'), (weights, b'new')):
            with open(path, 'wb') as handle:
                handle.write(data)
    assert (tmp_path / 'model.xml').read_bytes() == b'<new/>'
    assert (tmp_path / 'model.bin').read_bytes() == b'new'
    assert sorted(os.listdir(tmp_path)) == ['model.bin', 'model.xml']


@pytest.mark.parametrize('earlier', [True, False])
def test_atomic_files_failing_half_way_keep_the_earlier_pair(
        tmp_path, monkeypatch, earlier):
    """The second replace fails (the first file is already swapped in): the
    first gets its earlier content back, or goes when there was none."""
    if earlier:
        _pair(tmp_path)
    real_replace, calls = os.replace, []

    def replace_once(source, target):
        calls.append(target)
        if len(calls) == 2:
            _enospc()
        real_replace(source, target)

    monkeypatch.setattr(fileio.os, 'replace', replace_once)
    with pytest.raises(errors.OutputError, match='No space left'):
        with fileio.atomic_files([str(tmp_path / 'model.xml'),
                                  str(tmp_path / 'model.bin')]) as paths:
            for path in paths:
                with open(path, 'wb') as handle:
                    handle.write(b'new')
    assert len(calls) >= 2
    monkeypatch.undo()
    if earlier:
        assert (tmp_path / 'model.xml').read_bytes() == b'<old xml/>'
        assert (tmp_path / 'model.bin').read_bytes() == b'old weights'
        assert sorted(os.listdir(tmp_path)) == ['model.bin', 'model.xml']
    else:
        assert os.listdir(tmp_path) == []


def test_atomic_files_missing_output_replaces_nothing(tmp_path):
    _pair(tmp_path)
    with pytest.raises(errors.OutputError, match='made no'):
        with fileio.atomic_files([str(tmp_path / 'model.xml'),
                                  str(tmp_path / 'model.bin')]) as paths:
            with open(paths[0], 'wb') as handle:
                handle.write(b'<new/>')
    assert (tmp_path / 'model.xml').read_bytes() == b'<old xml/>'
    assert sorted(os.listdir(tmp_path)) == ['model.bin', 'model.xml']


# ---------------------------------------------------------------- exports

def test_failing_frozen_export_keeps_the_good_model(tmp_path,
                                                    small_checkpoint,
                                                    monkeypatch):
    output = tmp_path / 'model.pb'
    output.write_bytes(b'a good model from yesterday')
    monkeypatch.setattr(fileio.os, 'fsync', _enospc)
    with pytest.raises(OSError):
        export.export(str(output), 'frozen', small_checkpoint,
                      model='mobilenet_v1_025', image_size=128)
    assert output.read_bytes() == b'a good model from yesterday'
    assert os.listdir(tmp_path) == ['model.pb']


def test_failing_saved_model_export_leaves_no_folder(tmp_path,
                                                     small_checkpoint,
                                                     monkeypatch):
    output = tmp_path / 'saved'

    def fail_half_way(module, folder, *args, **kwargs):
        os.makedirs(os.path.join(folder, 'variables'), exist_ok=True)
        raise KeyboardInterrupt

    import tensorflow as tf2
    monkeypatch.setattr(tf2.saved_model, 'save', fail_half_way)
    with pytest.raises(KeyboardInterrupt):
        export.export(str(output), 'saved_model', small_checkpoint,
                      model='mobilenet_v1_025', image_size=128)
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    report = export.export(str(output), 'saved_model', small_checkpoint,
                           model='mobilenet_v1_025', image_size=128)
    assert report.max_abs_difference < 1e-5
    assert os.listdir(tmp_path) == ['saved']
    assert os.path.isfile(output / 'saved_model.pb')


def test_failing_openvino_export_keeps_the_earlier_pair(tmp_path,
                                                       small_checkpoint,
                                                       monkeypatch):
    """save_model writes the .xml, then the disk fills before the .bin."""
    try:
        import openvino  # pylint: disable=import-outside-toplevel
    except ImportError:
        pytest.skip('openvino is not installed (pip install '
                    '"slimnets[openvino]")')
    _pair(tmp_path)
    real_save = openvino.save_model

    def fail_half_way(model, path, *args, **kwargs):
        real_save(model, path, *args, **kwargs)
        os.remove(os.path.splitext(path)[0] + '.bin')
        _enospc()

    monkeypatch.setattr(openvino, 'save_model', fail_half_way)
    with pytest.raises(errors.OutputError, match='No space left'):
        export.export(str(tmp_path / 'model.xml'), 'openvino',
                      small_checkpoint, model='mobilenet_v1_025',
                      image_size=128)
    assert (tmp_path / 'model.xml').read_bytes() == b'<old xml/>'
    assert (tmp_path / 'model.bin').read_bytes() == b'old weights'
    assert sorted(os.listdir(tmp_path)) == ['model.bin', 'model.xml']
    monkeypatch.undo()
    report = export.export(str(tmp_path / 'model.xml'), 'openvino',
                           small_checkpoint, model='mobilenet_v1_025',
                           image_size=128)
    assert report.max_abs_difference < 1e-5
    assert sorted(os.listdir(tmp_path)) == ['model.bin', 'model.xml']
    assert (tmp_path / 'model.bin').stat().st_size > 1000


@pytest.fixture
def tiny_disk(tmp_path):
    """A 4 MB tmpfs (needs root and mount rights; skipped elsewhere)."""
    import subprocess
    mount = tmp_path / 'disk'
    mount.mkdir()
    made = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs',
                           str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip('cannot mount a 4 MB tmpfs here (needs root): %s'
                    % made.stderr.strip())
    try:
        yield mount
    finally:
        subprocess.run(['umount', str(mount)], check=True)


def test_an_export_onto_a_full_disk_leaves_only_what_was_there(
        tiny_disk, tmp_path, cli, one_line_error):
    """A real 4 MB disk and a 17 MB frozen graph: one line, the earlier
    good model.pb untouched, no temporary left."""
    prefix = str(tmp_path / 'v1' / 'model.ckpt')
    with tf.Graph().as_default():
        from slimnets import nets_factory
        nets_factory.get_network_fn('mobilenet_v1', 1001)(
            tf.placeholder(tf.float32, [1, 128, 128, 3]))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, prefix, write_meta_graph=False)
    good = tiny_disk / 'model.pb'
    good.write_bytes(b'the earlier good model')
    completed = cli('export', '--checkpoint', prefix, '--image-size', '128',
                    '--format', 'frozen', '--output', str(good))
    one_line_error(completed, 'space')
    assert sorted(os.listdir(tiny_disk)) == ['model.pb']
    assert good.read_bytes() == b'the earlier good model'
