"""Build script; metadata lives in setup.cfg.

The catalogue, the label files and the embedded default model are package
data under `slimnets/data/`, so regular, editable and wheel installs all
carry them.  The top-level
`checkpoints/` folder is only the download cache of a source checkout.
"""
from setuptools import find_packages
from setuptools import setup

setup(
    packages=find_packages(include=['slimnets', 'slimnets.*']),
    package_data={'slimnets': ['data/catalogue.json',
                               'data/imagenet_labels.tsv',
                               'data/PROVENANCE.md',
                               # the embedded default model, its licence
                               # and provenance (slimnets.checkpoints.embedded)
                               'data/embedded/*.tflite',
                               'data/embedded/LICENSE',
                               'data/embedded/README.md']},
)
