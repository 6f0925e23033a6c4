"""Fine-tuning and training (research/slim's train_image_classifier), in
one process or across machines.

    slimnets.training.loop         `train`: data, restore or resume, steps,
                                   checkpoints
    slimnets.training.graph        the training graph (one builder for one
                                   process and a cluster's worker)
    slimnets.training.train_dir    the training folder: lock, atomic saves,
                                   signals, resuming
    slimnets.training.distributed  parameter servers and workers on
                                   TensorFlow's distributed runtime

The fine-tuning options and their defaults are `slimnets.train_config`
(TensorFlow-free, for the command line).
"""

from slimnets.training import distributed
from slimnets.training.graph import TrainGraph
from slimnets.training.graph import build_train_graph
from slimnets.training.loop import TrainResult
from slimnets.training.loop import train
from slimnets.training.train_dir import LOCK_FILE
from slimnets.training.train_dir import MAX_TO_KEEP
from slimnets.training.train_dir import lock_train_dir

__all__ = ['LOCK_FILE', 'MAX_TO_KEEP', 'TrainGraph', 'TrainResult',
           'build_train_graph', 'distributed', 'lock_train_dir', 'train']
