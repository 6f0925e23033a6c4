"""Build script; metadata lives in setup.cfg.

`checkpoints/` (the checkpoint catalogue) is installed as the package
`slimnets._catalogue_data`, so the catalogue travels with every install.
"""
from setuptools import find_packages
from setuptools import setup

setup(
    packages=find_packages(include=['slimnets', 'slimnets.*']) +
    ['slimnets._catalogue_data'],
    package_dir={'slimnets._catalogue_data': 'checkpoints'},
    package_data={'slimnets._catalogue_data': ['catalogue.json'],
                  'slimnets': ['data/imagenet_labels.tsv',
                               'data/PROVENANCE.md']},
)
