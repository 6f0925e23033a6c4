"""Every install carries the catalogue and the labels (package data)."""

import importlib.resources
import json
import subprocess
import sys
import zipfile

import reference

PACKAGE_DATA = ('slimnets/data/catalogue.json',
                'slimnets/data/imagenet_labels.tsv',
                'slimnets/data/PROVENANCE.md',
                'slimnets/data/embedded/mobilenet_v2_1.0_224_quant.tflite',
                'slimnets/data/embedded/LICENSE',
                'slimnets/data/embedded/README.md')
# The wheel: the code, the catalogue and the 3.6 MB embedded model.
MAX_WHEEL_BYTES = 5 * 2 ** 20


def test_the_wheel_holds_the_catalogue_and_the_labels(tmp_path):
    completed = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps',
         '--no-build-isolation', '--no-index', '-w', str(tmp_path),
         reference.REPO_ROOT], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    wheels = list(tmp_path.glob('slimnets-*.whl'))
    assert len(wheels) == 1, completed.stdout
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
        for path in PACKAGE_DATA:
            assert path in names, sorted(names)
        catalogue = json.loads(wheel.read('slimnets/data/catalogue.json'))
    assert len(catalogue['checkpoints']) == 87
    assert not [n for n in names if n.startswith('checkpoints/')]
    # No test fixture travels with the package: no tests/, no images, one
    # model file.
    assert not [n for n in names if n.startswith('tests/') or n.endswith(
        ('.bmp', '.jpg', '.png', '.npz', '.ckpt.index'))], sorted(names)
    assert [n for n in names if n.endswith('.tflite')] == [
        'slimnets/data/embedded/mobilenet_v2_1.0_224_quant.tflite']
    assert wheels[0].stat().st_size < MAX_WHEEL_BYTES


def test_the_installed_package_reads_its_data_through_resources():
    root = importlib.resources.files('slimnets')
    for path in PACKAGE_DATA:
        assert root.joinpath(*path.split('/')[1:]).is_file(), path
