"""The embedded default model: Google's quantized MobileNet v2, offline.

The package ships one model file, Google's `mobilenet_v2_1.0_224_quant.tflite`
(Apache-2.0; `slimnets/data/embedded/README.md` gives its provenance), so that
the main job runs on a machine that reaches nothing but a package registry.
`checkpoint()` turns it, once, into a float slim checkpoint in the cache:

    <cache>/embedded/mobilenet_v2_1.0_224_quant/model.ckpt.{index,data-*}
    <cache>/embedded/mobilenet_v2_1.0_224_quant/embedded.json   (manifest)

The weights are the file's, dequantized (`converters.tflite_to_float_checkpoint`);
the folder is written atomically and its manifest (the source's sha256 and
each file's size and sha256) is checked on every later use, so a damaged
cache is rebuilt rather than used.  A cache folder that cannot be written
is replaced by a per-user temporary folder, with one warning.

The name `embedded` (`NAME`) stands for it wherever a checkpoint or
catalogue name is accepted; `DISPLAY_NAME` is how output names it, so that
nobody mistakes it for the float `mobilenet_v2_1.0_224` of the catalogue.
"""

import hashlib
import json
import logging
import os
import tempfile

from slimnets import fileio
from slimnets import registry
from slimnets.checkpoints import converters
from slimnets.checkpoints import published as catalogue
from slimnets.errors import CheckpointError
from slimnets.errors import OutputError

__all__ = ['NAME', 'DISPLAY_NAME', 'MODEL', 'SHA256', 'TOP1', 'TOP5',
           'NETWORK', 'DEPTH_MULTIPLIER', 'IMAGE_SIZE', 'NUM_CLASSES',
           'checkpoint', 'is_embedded', 'model_file', 'verify_model_file']

_log = logging.getLogger(__name__)

NAME = registry.DEFAULT_MODEL
MODEL = 'mobilenet_v2_1.0_224_quant'
DISPLAY_NAME = MODEL + ' (embedded)'
FILE_NAME = MODEL + '.tflite'
SHA256 = '7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776'
SIZE = 3610798
# Google's published ImageNet accuracy of this file (TensorFlow Lite
# hosted models table), single crop.
TOP1, TOP5 = 70.8, 89.9
NETWORK, DEPTH_MULTIPLIER, IMAGE_SIZE, NUM_CLASSES = 'mobilenet_v2', 1.0, 224, 1001

MANIFEST = 'embedded.json'
PREFIX_NAME = 'model.ckpt'


def is_embedded(name):
    """True when `name` names the embedded model."""
    return isinstance(name, str) and name in (NAME, DISPLAY_NAME)


def model_file():
    """The path of the embedded .tflite file inside the installed package."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(package, 'data', 'embedded', FILE_NAME)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def verify_model_file(path=None):
    """Checks the embedded file's sha256; returns its path.

    Raises:
      CheckpointError: the file is missing, damaged or replaced.
    """
    path = path or model_file()
    repair = ('reinstall slimnets (pip install --force-reinstall --no-deps '
              'slimnets, or git checkout the file in a source checkout), or '
              'name another model with --model/--checkpoint')
    if not os.path.isfile(path):
        raise CheckpointError('the embedded model file %s is missing: %s' % (
            path, repair))
    found = _sha256(path)
    if found != SHA256:
        raise CheckpointError(
            'the embedded model file %s is damaged or replaced (sha256 %s..., '
            'expected %s...): %s' % (path, found[:12], SHA256[:12], repair))
    return path


def _manifest_ok(folder):
    """True when `folder` holds a complete conversion of this file."""
    try:
        with open(os.path.join(folder, MANIFEST), encoding='utf-8') as handle:
            manifest = json.load(handle)
        if manifest.get('source_sha256') != SHA256:
            return False
        files = manifest['files']
        if not any(name.startswith(PREFIX_NAME + '.index') for name in files):
            return False
        for name, (size, digest) in files.items():
            path = os.path.join(folder, name)
            if os.path.getsize(path) != size or _sha256(path) != digest:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _convert_into(folder, final):
    source = verify_model_file()
    _log.info('converting the embedded %s into a slim checkpoint in %s (once)',
              FILE_NAME, final)
    converters.tflite_to_float_checkpoint(source, os.path.join(folder, PREFIX_NAME))
    files = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        files[name] = [os.path.getsize(path), _sha256(path)]
    manifest = {'model': MODEL, 'source': FILE_NAME, 'source_sha256': SHA256,
                'network': NETWORK, 'depth_multiplier': DEPTH_MULTIPLIER,
                'image_size': IMAGE_SIZE, 'num_classes': NUM_CLASSES,
                'label_offset': 1,
                'weights': 'float, dequantized from the uint8 file',
                'files': files}
    with open(os.path.join(folder, MANIFEST), 'w', encoding='utf-8') as handle:
        json.dump(manifest, handle, indent=1)
        handle.write('\n')


def _fallback_root():
    return os.path.join(tempfile.gettempdir(), 'slimnets-%s' % (
        os.getuid() if hasattr(os, 'getuid') else 'user'))


def _build(root):
    folder = os.path.join(root, 'embedded', MODEL)
    with fileio.file_lock(os.path.join(root, 'embedded', '.lock')):
        if not _manifest_ok(folder):   # another process may have made it
            with fileio.atomic_folder(folder) as temporary:
                _convert_into(temporary, folder)
    return os.path.join(folder, PREFIX_NAME)


def checkpoint(cache_dir=None):
    """The prefix of the embedded model's slim checkpoint, made on first use.

    Args:
      cache_dir: the cache (default `slimnets.checkpoints.cache_dir()`); when
        it cannot be written, a per-user folder in the temporary directory.

    Returns:
      '<cache>/embedded/mobilenet_v2_1.0_224_quant/model.ckpt'.

    Raises:
      CheckpointError: the embedded file is damaged (see verify_model_file).
      OutputError: neither the cache nor the temporary folder is writable.
    """
    root = catalogue.cache_dir(cache_dir)
    folder = os.path.join(root, 'embedded', MODEL)
    if _manifest_ok(folder):
        return os.path.join(folder, PREFIX_NAME)
    verify_model_file()
    try:
        os.makedirs(os.path.join(root, 'embedded'), exist_ok=True)
        return _build(root)
    except (OSError, OutputError) as error:
        fallback = _fallback_root()
        if os.path.abspath(fallback) == root:
            raise
        _log.warning('the cache %s cannot be written (%s); the embedded model '
                     'goes to %s instead (set SLIMNETS_CACHE or --cache-dir '
                     'to a writable folder)', root, getattr(
                         error, 'strerror', None) or error, fallback)
        if _manifest_ok(os.path.join(fallback, 'embedded', MODEL)):
            return os.path.join(fallback, 'embedded', MODEL, PREFIX_NAME)
        os.makedirs(os.path.join(fallback, 'embedded'), exist_ok=True)
        return _build(fallback)
