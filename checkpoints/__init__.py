"""The catalogue of published checkpoints (`catalogue.json`), installed as
the package data `slimnets._catalogue_data`; this folder is also the default
download cache of a source checkout."""
