"""The training folder: one training at a time (a lock), checkpoints saved
whole or not at all (signals wait for a save to end; MAX_TO_KEEP kept
across reruns), SIGTERM turned into a last save, and the check that a rerun
resumes the same model on the same classes."""

import contextlib
import glob
import logging
import os
import signal
import threading

import tensorflow.compat.v1 as tf

from slimnets import fileio
from slimnets import labels as labels_lib
from slimnets.datasets import records
from slimnets.errors import InputError
from slimnets.errors import OutputError
from slimnets.inference import models

__all__ = ['LOCK_FILE', 'MAX_TO_KEEP', 'lock_train_dir', 'signals_held',
           'save', 'StopSignals', 'remove_partial_checkpoints',
           'check_resumable']

_log = logging.getLogger(__name__)

LOCK_FILE = '.train.lock'     # held by the training writing the folder


MAX_TO_KEEP = 3               # checkpoints kept, across reruns too


def lock_train_dir(train_dir):
    """This process's lock on `train_dir` (a `fileio.ProcessLock` on its
    LOCK_FILE), so that two trainings never write one folder.

    Raises:
      InputError: another process holds it, naming its PID.
    """
    lock, holder = fileio.try_process_lock(os.path.join(train_dir, LOCK_FILE))
    if lock is None:
        raise InputError(
            '%s is in use by another training (%s); wait for it to end, or '
            'give another --train-dir' % (train_dir, 'PID %d' % holder
                                          if holder else 'PID unknown'))
    return lock


@contextlib.contextmanager
def signals_held():
    """Defers SIGINT and SIGTERM while the block runs, so that a save is
    never cut between writing a checkpoint and removing the one beyond
    MAX_TO_KEEP.  A signal that comes meanwhile is recorded and delivered
    to the handler that was in place once the block ends.

    Masking the signals would not do: a signal sent to the process reaches
    any thread that does not block it (TensorFlow runs many), and Python
    then runs its handler in the main thread all the same.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []

    def record(signal_number, frame):
        del frame
        received.append(signal_number)

    previous = {number: signal.signal(number, record)
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            if handler is not None:  # None: not installed from Python
                signal.signal(number, handler)
        for number in dict.fromkeys(received):
            signal.raise_signal(number)


def save(sess, saver, train_dir, step):
    """Saves the checkpoint of `step`; returns its prefix.

    TensorFlow writes the files under temporary names and updates the
    `checkpoint` file last, so a failed save leaves the earlier checkpoints
    and that file as they were; its temporaries are removed here.

    Raises:
      OutputError: the save failed (a full disk, a read-only folder),
        naming the last good checkpoint.
    """
    try:
        with signals_held():
            return saver.save(sess, os.path.join(train_dir, 'model.ckpt'),
                              global_step=step, write_meta_graph=False)
    except (tf.errors.OpError, OSError) as error:
        with contextlib.suppress(OSError):
            remove_partial_checkpoints(train_dir)
        last = tf.train.latest_checkpoint(train_dir)
        reason = records.tf_message(error) if isinstance(
            error, tf.errors.OpError) else (error.strerror or str(error))
        raise OutputError(
            'could not save the checkpoint of step %d in %s (%s); %s. Free '
            'some space or give another --train-dir' % (
                step, train_dir, reason,
                'the last good checkpoint, %s, is intact and a rerun resumes '
                'from it' % os.path.basename(last) if last else
                'no checkpoint was kept')) from None


class StopSignals(object):
    """While active (in the main thread), SIGTERM only sets `received`, so
    that the step running ends and a checkpoint can be saved."""

    SIGNALS = (signal.SIGTERM,)

    def __init__(self):
        self.received = None
        self._previous = {}

    def _handle(self, signal_number, frame):
        del frame
        self.received = signal_number

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info):
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def remove_partial_checkpoints(train_dir):
    """Removes the `*.tempstate*` files a killed run's checkpoint writer
    left in `train_dir` (TensorFlow renames them into place when a save
    completes, so one left over is never part of a checkpoint)."""
    for path in glob.glob(os.path.join(train_dir, '*.tempstate*')):
        _log.info('Removing %s, left by an interrupted save', path)
        os.remove(path)


def check_resumable(train_dir, spec, class_names):
    """Refuses, before anything is written, to continue a run in
    `train_dir` with another network, input size or set of classes.

    Raises:
      InputError: naming what differs and the way out.
    """
    if not os.path.isdir(train_dir):
        return
    recorded = models.read_model_file(os.path.join(train_dir, 'model.ckpt'))
    differences = []
    if recorded is not None:
        for field in ('network', 'kwargs', 'image_size', 'num_classes'):
            old, new = getattr(recorded, field), getattr(spec, field)
            if old != new:
                differences.append('%s %s, now %s' % (field, old, new))
    old_names = labels_lib.class_names(train_dir)
    if old_names is not None:
        if old_names != list(class_names):
            differences.append('classes %s, now %s' % (
                ', '.join(old_names[:5]) + ('...' if len(old_names) > 5 else ''),
                ', '.join(class_names[:5]) + ('...' if len(class_names) > 5
                                              else '')))
    if differences:
        raise InputError('%s holds a run of another model (%s); give a new '
                         '--train-dir, or remove that folder to start over'
                         % (train_dir, '; '.join(differences)))
