"""The fine-tuning recipe's options and defaults (train_image_classifier's).

Kept free of TensorFlow so the command line can offer them (and answer
`--help`) without importing it.
"""

import collections

__all__ = ['OPTIMIZERS', 'DECAY_TYPES', 'TrainConfig', 'DEFAULTS']

OPTIMIZERS = ('adadelta', 'adagrad', 'adam', 'ftrl', 'momentum', 'sgd',
              'rmsprop')
DECAY_TYPES = ('fixed', 'exponential', 'polynomial')

TrainConfig = collections.namedtuple('TrainConfig', [
    'batch_size', 'image_size', 'max_steps', 'optimizer', 'learning_rate',
    'learning_rate_decay_type', 'learning_rate_decay_factor',
    'num_epochs_per_decay', 'end_learning_rate', 'weight_decay',
    'label_smoothing', 'moving_average_decay', 'momentum', 'rmsprop_momentum',
    'rmsprop_decay', 'opt_epsilon', 'adam_beta1', 'adam_beta2',
    'adadelta_rho', 'adagrad_initial_accumulator_value', 'save_every_steps',
    'log_every_n_steps', 'seed', 'batch_norm_decay', 'fine_tune_batch_norm',
    'quantize_delay'])

DEFAULTS = TrainConfig(
    batch_size=32, image_size=None, max_steps=1000, optimizer='rmsprop',
    learning_rate=0.01, learning_rate_decay_type='exponential',
    learning_rate_decay_factor=0.94, num_epochs_per_decay=2.0,
    end_learning_rate=0.0001, weight_decay=0.00004, label_smoothing=0.0,
    moving_average_decay=None, momentum=0.9, rmsprop_momentum=0.9,
    rmsprop_decay=0.9, opt_epsilon=1.0, adam_beta1=0.9, adam_beta2=0.999,
    adadelta_rho=0.95, adagrad_initial_accumulator_value=0.1,
    save_every_steps=100, log_every_n_steps=10, seed=None,
    batch_norm_decay=None, fine_tune_batch_norm=True, quantize_delay=None)
