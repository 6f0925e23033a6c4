"""Issue 25, data building and training under faults: a FIFO among the
images, labels files in other encodings, an output folder inside the input,
class folders without images, a full disk during a checkpoint save, SIGTERM
and SIGINT during training, two trainings into one folder, and a TFRecord
shard damaged in the middle.  Each ends in one line (or a slimnets error)
naming the problem and the way out, with nothing half-written left."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf2

from slimnets import datasets
from slimnets import fileio
from slimnets import training
from slimnets.datasets import builder as dataset_build
from slimnets.errors import InputError
from slimnets.training import train_dir as train_dir_lib

# The smallest training: MobileNet v1 0.25 from scratch at 32x32, batch 4,
# RMSProp (2.6 MB a checkpoint).
TRAIN = ['--model', 'mobilenet_v1_025', '--image-size', '32', '--batch-size',
         '4', '--optimizer', 'rmsprop', '--seed', '1', '--no-progress']


def _png(rng, size=24):
    pixels = rng.randint(0, 255, (size, size, 3)).astype(np.uint8)
    return tf2.io.encode_png(pixels).numpy()


def _tree(root, classes=('daisy', 'rose'), per_class=4, seed=0):
    """Class folders of small random PNGs under `root`; returns its path."""
    rng = np.random.RandomState(seed)
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for index in range(per_class):
            with open(os.path.join(root, name, '%d.png' % index), 'wb') as out:
                out.write(_png(rng))
    return str(root)


def _leftovers(folder):
    """Temporaries (fileio's `.NAME.tmp-PID-...`) left anywhere in `folder`."""
    found = []
    for parent, _, names in os.walk(folder):
        found.extend(os.path.join(parent, n) for n in names
                     if '.tmp-' in n or '.tempstate' in n)
    return found


# ------------------------------------------------------------ 4: a FIFO

@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='no FIFOs here')
def test_a_fifo_among_the_images_is_skipped_without_blocking(tmp_path, cli):
    data = _tree(tmp_path / 'ds')
    fifo = os.path.join(data, 'rose', 'f.jpg')
    os.mkfifo(fifo)
    output = str(tmp_path / 'out')
    done = {}
    # In a thread with a deadline: before the fix the build blocked for ever
    # in open() on the FIFO.
    thread = threading.Thread(target=lambda: done.update(result=cli(
        'data', 'build', '--input', data, '--output', output, '--shards', '1',
        '--validation-fraction', '0', '--no-progress')), daemon=True)
    thread.start()
    thread.join(120)
    if thread.is_alive():
        # Unblock the reader so that the thread ends, then fail.
        with open(fifo, 'wb'):
            pass
        thread.join(30)
        pytest.fail('data build blocked on a FIFO')
    completed = done['result']
    assert completed.returncode == 0, completed.stderr
    line = [x for x in completed.stdout.splitlines() if 'f.jpg' in x]
    assert line == ['  %s: not a regular file (a FIFO)' % fifo]
    assert 'skipped: 1' in completed.stdout
    assert datasets.count_records(os.path.join(
        output, 'train-00000-of-00001')) == 8
    assert not _leftovers(output)
    # A FIFO as the labels file is refused the same way.
    fifo_labels = str(tmp_path / 'labels.txt')
    os.mkfifo(fifo_labels)
    with pytest.raises(InputError, match='is not a regular file'):
        dataset_build.build(data, str(tmp_path / 'other'),
                            labels_file=fifo_labels, progress=False)


def test_a_failed_shard_stops_the_others_and_leaves_no_temporary(
        tmp_path, monkeypatch):
    data = _tree(tmp_path / 'ds', per_class=6)
    output = tmp_path / 'out'
    calls = []
    real = dataset_build._read_regular_file

    def failing(path):
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError('injected failure')
        time.sleep(0.05)
        return real(path)

    monkeypatch.setattr(dataset_build, '_read_regular_file', failing)
    with pytest.raises(RuntimeError, match='injected failure'):
        dataset_build.build(data, str(output), shards=4,
                            validation_fraction=0, workers=4, progress=False)
    assert not _leftovers(str(output))
    assert not [n for n in os.listdir(output) if n.startswith('train-')]
    # The other shards stopped early instead of reading all their images.
    assert len(calls) < 12


# ------------------------------------------------------- 5: labels files

@pytest.mark.parametrize('content, fragment', [
    (b'', 'is empty'),
    (b'\n  \n', 'is empty'),
    ('daisy\nros\xe9\n'.encode('latin-1'),
     'is not UTF-8 text: it has the byte 0xE9 at offset 9 (Latin-1'),
    ('daisy\nrose\n'.encode('utf-16'), 'is UTF-16 (little-endian) text, not '
     'UTF-8'),
    ('daisy\nrose\n'.encode('utf-16-be'), 'has NUL bytes (UTF-16 without a '
     'byte-order mark?)'),
])
def test_a_labels_file_that_is_not_utf8_text_is_named(
        tmp_path, cli, one_line_error, content, fragment):
    data = _tree(tmp_path / 'ds')
    labels = tmp_path / 'labels.txt'
    labels.write_bytes(content)
    completed = cli('data', 'build', '--input', data, '--output',
                    tmp_path / 'out', '--labels', labels, '--no-progress')
    one_line_error(completed, str(labels), fragment)
    if content.strip():
        assert 'save it as UTF-8' in completed.stderr


@pytest.mark.parametrize('text', ['rose\ndaisy\n', '1:rose\n0:daisy\n'])
def test_a_labels_file_with_a_byte_order_mark_is_read(tmp_path, text):
    data = _tree(tmp_path / 'ds')
    labels = tmp_path / 'labels.txt'
    labels.write_bytes(b'\xef\xbb\xbf' + text.encode('utf-8'))
    report = dataset_build.build(data, str(tmp_path / 'out'), shards=1,
                                 validation_fraction=0, labels_file=str(labels),
                                 progress=False)
    assert report.labels == {'rose': 1, 'daisy': 0} if ':' in text else \
        {'rose': 0, 'daisy': 1}
    # The labels.txt of TFRecords is read the same way for training.
    records = tmp_path / 'out'
    (records / 'labels.txt').write_bytes(b'\xef\xbb\xbf0:daisy\n1:rose\n')
    assert datasets.training_source(str(records)).class_names == [
        'daisy', 'rose']


# ------------------------------------- 8: output inside input, empty classes

def test_an_output_inside_the_input_is_refused(tmp_path, cli, one_line_error):
    data = _tree(tmp_path / 'ds')
    for output in (os.path.join(data, 'records'), data,
                   os.path.join(data, 'daisy', 'deeper')):
        one_line_error(cli('data', 'build', '--input', data, '--output',
                           output, '--no-progress'),
                       'is inside the input folder %s' % data,
                       'give an --output outside')
        assert not os.path.exists(os.path.join(data, 'records'))
    assert sorted(os.listdir(data)) == ['daisy', 'rose']


def test_a_records_folder_in_a_class_tree_is_not_a_class(tmp_path, cli):
    data = _tree(tmp_path / 'ds')
    # A build output that an earlier version let land inside the tree.
    records = os.path.join(data, 'records')
    dataset_build.build(data, str(tmp_path / 'out'), shards=1,
                        validation_fraction=0, progress=False)
    os.rename(str(tmp_path / 'out'), records)
    source = datasets.training_source(data)
    assert source.class_names == ['daisy', 'rose']
    assert len(source.files) == 8
    # An image whose name looks like a shard's does not hide its class.
    os.rename(os.path.join(data, 'rose', '0.png'),
              os.path.join(data, 'rose', 'photo-of-a-rose.png'))
    assert datasets.training_source(data).class_names == ['daisy', 'rose']
    assert datasets.evaluation_source(data, 2, ['daisy', 'rose']).labels == \
        [0] * 4 + [1] * 4
    # A rerun of the build reads the same two classes (the plan is the one
    # of the first build: nothing refused, nothing rewritten).
    report = dataset_build.build(data, str(tmp_path / 'again'), shards=1,
                                 validation_fraction=0, progress=False)
    assert report.class_names == ['daisy', 'rose']


@pytest.mark.parametrize('kind', ['empty', 'loop', 'parent-loop'])
def test_class_folders_without_images_are_refused(tmp_path, cli,
                                                  one_line_error, kind):
    data = _tree(tmp_path / 'ds')
    odd = os.path.join(data, 'tulip')
    if kind == 'empty':
        os.makedirs(odd)
        fragment = 'class folder(s) tulip in %s hold no images' % data
    elif kind == 'loop':
        os.symlink('.', odd)
        fragment = 'class folder(s) tulip in %s link back' % data
    else:
        os.symlink('..', odd)
        fragment = 'class folder(s) tulip in %s link back' % data
    output = tmp_path / 'out'
    one_line_error(cli('data', 'build', '--input', data, '--output', output,
                       '--no-progress'), fragment)
    assert not output.exists()
    with pytest.raises(InputError, match=re.escape(fragment)):
        datasets.training_source(data)


# ------------------------------------------------------------- training

@pytest.fixture(scope='module')
def images(tmp_path_factory):
    return _tree(tmp_path_factory.mktemp('train') / 'ds', per_class=6)


def _indexes(train_dir):
    return sorted(n for n in os.listdir(train_dir) if n.endswith('.index'))


def _step(train_dir):
    latest = tf2.train.latest_checkpoint(train_dir) if os.path.isdir(
        train_dir) else None
    return int(latest.rsplit('-', 1)[1]) if latest else 0


def _wait_for(condition, process, seconds):
    deadline = time.time() + seconds
    while not condition():
        assert process.poll() is None, 'training ended early'
        assert time.time() < deadline, 'timed out'
        time.sleep(0.2)


def test_sigterm_saves_the_step_and_the_rerun_resumes_there(
        images, tmp_path, cli, one_line_error):
    """A scheduler's SIGTERM: the running step ends, its checkpoint is
    saved, one line says so, the status is 143; a second training into the
    folder meanwhile is refused naming the first's PID; the rerun resumes
    at the saved step and keeps MAX_TO_KEEP checkpoints."""
    train_dir = str(tmp_path / 'run')
    log = tmp_path / 'stderr.txt'
    with open(log, 'wb') as stderr:
        process = subprocess.Popen(
            [sys.executable, '-m', 'slimnets', 'train', '--train-dir',
             train_dir, '--data', images, '--max-steps', '100000',
             '--save-every-steps', '3'] + TRAIN,
            stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        _wait_for(lambda: _step(train_dir) >= 3, process, 240)
        second = cli('train', '--train-dir', train_dir, '--data', images,
                     '--max-steps', '5', *TRAIN)
        one_line_error(second, '%s is in use by another training (PID %d)'
                       % (train_dir, process.pid), 'give another --train-dir')
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    completed = type(second)(returncode, '', log.read_text())
    one_line_error(completed, 'stopped by SIGTERM at step', status=143)
    line = log.read_text().strip().splitlines()[-1]
    step = int(re.search(r'at step (\d+): saved (\S+); run the same command '
                         r'again to resume', line).group(1))
    assert re.search(r'saved %s;' % re.escape(os.path.join(
        train_dir, 'model.ckpt-%d' % step)), line), line
    # The step it stopped at, not only the last periodic one, was saved.
    assert _step(train_dir) == step >= 3
    assert not _leftovers(train_dir)
    resumed = cli('train', '--train-dir', train_dir, '--data', images,
                  '--max-steps', str(step + 4), '--save-every-steps', '1',
                  *TRAIN)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert 'resumed at step %d' % step in resumed.stdout
    assert _step(train_dir) == step + 4
    assert len(_indexes(train_dir)) == training.MAX_TO_KEEP


def test_after_ctrl_c_the_rerun_keeps_max_to_keep_checkpoints(
        images, tmp_path, cli):
    train_dir = str(tmp_path / 'run')

    def interrupt():
        deadline = time.time() + 240
        while len(_indexes(train_dir)) < 3 if os.path.isdir(train_dir) \
                else True:
            if time.time() > deadline:
                return
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=interrupt, daemon=True)
    watcher.start()
    first = cli('train', '--train-dir', train_dir, '--data', images,
                '--max-steps', '100000', '--save-every-steps', '1', *TRAIN)
    watcher.join(10)
    assert first.returncode == 1
    assert 'interrupted (Ctrl-C)' in first.stderr
    assert len(_indexes(train_dir)) == 3
    step = _step(train_dir)
    again = cli('train', '--train-dir', train_dir, '--data', images,
                '--max-steps', str(step + 3), '--save-every-steps', '1',
                *TRAIN)
    assert again.returncode == 0, again.stderr[-2000:]
    # Before: the three of the first run stayed beside three new ones.
    assert _indexes(train_dir) == ['model.ckpt-%d.index' % s for s in (
        step + 1, step + 2, step + 3)]
    assert not _leftovers(train_dir)


def test_a_signal_sent_to_the_process_waits_for_the_save_to_end():
    # A signal sent to the process may reach any of its threads; it must
    # still wait until the save (write, then prune) is over.
    reached_inside = []
    sender = threading.Thread(
        target=lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        with train_dir_lib.signals_held():
            sender.start()
            sender.join(10)
            for _ in range(200):  # ample time for a handler to run here
                time.sleep(0.001)
            reached_inside.append(True)
    assert reached_inside == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_stale_lock_does_not_stop_training(images, tmp_path, cli,
                                             one_line_error):
    train_dir = tmp_path / 'run'
    os.makedirs(train_dir)
    lock = str(train_dir / training.LOCK_FILE)
    holder = subprocess.Popen([sys.executable, '-c', (
        'import sys, time; from slimnets import fileio; '
        'held = fileio.try_process_lock(sys.argv[1]); '
        'print("held", flush=True); time.sleep(120)'), lock],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        one_line_error(cli('train', '--train-dir', train_dir, '--data', images,
                           '--max-steps', '1', *TRAIN),
                       'in use by another training (PID %d)' % holder.pid)
    finally:
        holder.kill()
        holder.wait()
    # Its process is gone: the lock file is left, naming it, and is taken.
    assert open(lock).read().strip() == str(holder.pid)
    completed = cli('train', '--train-dir', train_dir, '--data', images,
                    '--max-steps', '1', *TRAIN)
    assert completed.returncode == 0, completed.stderr[-2000:]
    # Released when the training ended.
    taken, _ = fileio.try_process_lock(lock)
    assert taken is not None
    taken.release()


def _failing_save(monkeypatch, fail_at_call):
    """Saver.save raises TensorFlow's ResourceExhaustedError (what a full
    disk gives) at call `fail_at_call`, after leaving a partial file as
    TensorFlow's writer does."""
    real = tf2.compat.v1.train.Saver.save
    calls = []

    def save(self, sess, save_path, global_step=None, **kwargs):
        calls.append(global_step)
        if len(calls) == fail_at_call:
            partial = '%s-%d.data-00000-of-00001.tempstate42' % (
                save_path, global_step)
            with open(partial, 'wb') as handle:
                handle.write(b'half')
            raise tf2.errors.ResourceExhaustedError(
                None, None, '%s; No space left on device' % partial)
        return real(self, sess, save_path, global_step=global_step, **kwargs)

    monkeypatch.setattr(tf2.compat.v1.train.Saver, 'save', save)


def _check_disk_full(completed, train_dir, one_line_error, failed, good):
    one_line_error(completed, 'could not save the checkpoint of step %d in %s'
                   % (failed, train_dir), 'the last good checkpoint, '
                   'model.ckpt-%d, is intact' % good, 'Free some space')
    assert tf2.train.latest_checkpoint(train_dir).endswith(
        'model.ckpt-%d' % good)
    assert not _leftovers(train_dir)


def test_a_full_disk_during_a_save_is_one_line(images, tmp_path, cli,
                                               one_line_error, monkeypatch):
    train_dir = str(tmp_path / 'run')
    _failing_save(monkeypatch, 3)
    completed = cli('train', '--train-dir', train_dir, '--data', images,
                    '--max-steps', '10', '--save-every-steps', '2', *TRAIN)
    _check_disk_full(completed, train_dir, one_line_error, 6, 4)
    assert _indexes(train_dir) == ['model.ckpt-2.index', 'model.ckpt-4.index']


def _mount_tmpfs(folder, size):
    os.makedirs(folder)
    try:
        mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s' % size,
                                  'tmpfs', folder], capture_output=True,
                                 timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        mounted = False
    if not mounted:
        pytest.skip('cannot mount a tmpfs here (needs root)')


def test_a_really_full_disk_during_a_save_is_one_line(images, tmp_path, cli,
                                                      one_line_error):
    """A 6 MB tmpfs holds two 2.6 MB checkpoints, not three."""
    train_dir = str(tmp_path / 'small')
    _mount_tmpfs(train_dir, '6m')
    try:
        completed = cli('train', '--train-dir', train_dir, '--data', images,
                        '--max-steps', '10', '--save-every-steps', '2', *TRAIN)
        _check_disk_full(completed, train_dir, one_line_error, 6, 4)
    finally:
        subprocess.run(['umount', '-l', train_dir], timeout=30)


# ------------------------------------------- 11: a damaged TFRecord shard

def _corrupt(path, record, where='data'):
    """Flips one bit of record `record` of a TFRecord file: in its data
    (the data checksum fails) or in its length (the length checksum)."""
    data = bytearray(open(path, 'rb').read())
    position = 0
    for _ in range(record):
        length = int.from_bytes(data[position:position + 8], 'little')
        position += 12 + length + 4
    data[position + (20 if where == 'data' else 1)] ^= 0x10
    with open(path, 'wb') as handle:
        handle.write(bytes(data))


@pytest.fixture(scope='module')
def records(images, tmp_path_factory):
    """`images` as 3 train shards and 1 validation shard."""
    output = str(tmp_path_factory.mktemp('records') / 'out')
    dataset_build.build(images, output, shards=3, validation_fraction=0.25,
                        progress=False)
    return output


def test_a_damaged_shard_in_the_middle_is_named_by_train_and_eval(
        records, tmp_path, cli, one_line_error):
    data = str(tmp_path / 'records')
    os.makedirs(data)
    for name in os.listdir(records):
        with open(os.path.join(records, name), 'rb') as source, \
                open(os.path.join(data, name), 'wb') as target:
            target.write(source.read())
    # A checkpoint to evaluate, trained on the intact shards.
    run = str(tmp_path / 'run')
    trained = cli('train', '--train-dir', run, '--data', data,
                  '--max-steps', '1', *TRAIN)
    assert trained.returncode == 0, trained.stderr[-2000:]
    shard = os.path.join(data, 'train-00001-of-00003')
    _corrupt(shard, 1)
    completed = cli('train', '--train-dir', str(tmp_path / 'run2'), '--data',
                    data, '--max-steps', '20', *TRAIN)
    one_line_error(completed, '%s record 1 is damaged' % shard,
                   'rebuild that file')
    evaluated = cli('eval', '--checkpoint', run, '--data', data, '--split',
                    'train', '--no-progress')
    one_line_error(evaluated, '%s record 1 is damaged' % shard,
                   'rebuild that file')
    # A damaged length is named from the record headers alone.
    _corrupt(os.path.join(data, 'train-00002-of-00003'), 1, 'length')
    with pytest.raises(InputError, match=re.escape(
            'train-00002-of-00003 record 1 is damaged (bad length checksum')):
        datasets.count_records(os.path.join(data, 'train-00002-of-00003'))
