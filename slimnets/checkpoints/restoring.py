"""Restoring checkpoints into graphs: name mapping, shadows, exclusions.

`plan(...)` decides, for every graph variable, which checkpoint tensor it
gets, and checks every shape before anything is assigned; `restore(...)`
and `init_fn(...)` assign a complete plan or nothing.  A plan that cannot be
carried out raises `CheckpointError` naming each variable, both shapes and
the likely cause.
"""

import collections

import tensorflow.compat.v1 as tf

from slimnets.checkpoints import download
from slimnets.checkpoints import identification as identify_lib
from slimnets.checkpoints import reader
from slimnets.errors import ArgumentTypeError
from slimnets.errors import CheckpointError
from slimnets.errors import InputError

__all__ = [
    'SHADOW_SUFFIX', 'RestorePlan', 'auto_scope_map', 'plan',
    'likely_cause', 'checked_plan', 'restore', 'init_fn',
]

SHADOW_SUFFIX = identify_lib.SHADOW_SUFFIX
_LISTED = 12  # variables named in one error message

RestorePlan = collections.namedtuple('RestorePlan', [
    'checkpoint',     # the prefix
    'assignments',    # [(variable, checkpoint key)], in graph order
    'missing',        # graph variables without a checkpoint entry
    'mismatched',     # [(variable, checkpoint key, checkpoint shape)]
    'excluded',       # graph variables left out by `exclude`
    'unexpected',     # checkpoint keys no graph variable uses
    'scope_map',      # {graph prefix: checkpoint prefix} used
    'moving_average', # whether shadows were used
])


def _graph_variables(var_list):
    if var_list is None:
        var_list = tf.global_variables()
    elif isinstance(var_list, tf.Graph):
        with var_list.as_default():
            var_list = tf.global_variables()
    elif isinstance(var_list, dict):
        raise ArgumentTypeError('var_list must be a list of variables or a '
                                'graph; use scope_map to rename')
    return list(var_list)


def _name(variable):
    return variable.op.name


def auto_scope_map(graph_names, checkpoint_names):
    """{graph network scope + '/': checkpoint network scope + '/'} or {}.

    Maps e.g. 'FeatureExtractor/MobilenetV1/' to 'MobilenetV1/' when the
    names do not already match.
    """
    checkpoint_names = set(checkpoint_names)
    if any(name in checkpoint_names for name in graph_names):
        return {}
    graph_scope = identify_lib.network_scope(graph_names)
    checkpoint_scope = identify_lib.network_scope(checkpoint_names)
    if graph_scope and checkpoint_scope and graph_scope != checkpoint_scope:
        return {graph_scope + '/': checkpoint_scope + '/'}
    return {}


def _map_name(name, scope_map):
    for graph_prefix in sorted(scope_map, key=len, reverse=True):
        if name.startswith(graph_prefix):
            return scope_map[graph_prefix] + name[len(graph_prefix):]
    return name


def _excluded(name, exclude):
    return any(name == scope or name.startswith(scope.rstrip('/') + '/')
               for scope in exclude)


def _is_local_step(name):
    return name == 'global_step' or name.endswith('/global_step')


def plan(checkpoint, var_list=None, scope_map=None, moving_average='auto',
         exclude=(), cache_dir=None):
    """Maps graph variables to checkpoint tensors and checks the shapes.

    Args:
      checkpoint: a checkpoint path or catalogue name.
      var_list: variables to restore (default: all global variables of the
        default graph), or a `tf.Graph`.
      scope_map: {graph prefix: checkpoint prefix}; default: detected (for
        example 'FeatureExtractor/MobilenetV1/' -> 'MobilenetV1/').
      moving_average: True: restore each variable from its
        '<name>/ExponentialMovingAverage' shadow (required); False: never;
        'auto': wherever the checkpoint has the shadow.
      exclude: graph scopes (or names) not to restore, e.g.
        ['MobilenetV1/Logits'] to fine-tune a new head.

    Returns:
      A `RestorePlan` (nothing is assigned).
    """
    if moving_average not in (True, False, 'auto'):
        raise InputError("moving_average must be True, False or 'auto', got %r"
                         % (moving_average,))
    prefix = download.resolve(checkpoint, cache_dir=cache_dir)
    _, checkpoint_reader = reader.open_checkpoint(prefix)
    shapes = checkpoint_reader.get_variable_to_shape_map()
    variables = _graph_variables(var_list)
    if scope_map is None:
        scope_map = auto_scope_map([_name(v) for v in variables], shapes)
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)

    assignments, missing, mismatched, excluded, used = [], [], [], [], set()
    for variable in variables:
        name = _name(variable)
        if _excluded(name, exclude):
            excluded.append(variable)
            continue
        key = _map_name(name, scope_map)
        shadow = key + SHADOW_SUFFIX
        if moving_average is True or (moving_average == 'auto' and
                                      shadow in shapes):
            if shadow in shapes:
                key = shadow
            elif key in shapes and not _is_local_step(key):
                missing.append(variable)
                continue
        if key not in shapes:
            missing.append(variable)
            continue
        used.add(key)
        if list(shapes[key]) != variable.shape.as_list():
            mismatched.append((variable, key, list(shapes[key])))
            continue
        assignments.append((variable, key))
    unexpected = sorted(k for k in shapes if k not in used)
    return RestorePlan(prefix, assignments, missing, mismatched, excluded,
                       unexpected, dict(scope_map),
                       any(k.endswith(SHADOW_SUFFIX) for _, k in assignments))


def likely_cause(name, graph_shape, checkpoint_shape, checkpoint_identity,
                 graph_identity):
    """A sentence explaining why a variable's shapes differ."""
    if checkpoint_identity.family != graph_identity.family and \
            checkpoint_identity.family and graph_identity.family:
        return ('wrong network: the checkpoint is %s, the graph %s'
                % (checkpoint_identity.network, graph_identity.network))
    if '/Logits/' in name and graph_shape[:-1] == checkpoint_shape[:-1]:
        classes = (checkpoint_shape[-1], graph_shape[-1])
        if sorted(classes) == [1000, 1001]:
            return ('1000 vs 1001 classes: published checkpoints have 1001 '
                    '(index 0 is background); build with num_classes=%d, or '
                    'exclude the logits scope to train a new head'
                    % checkpoint_shape[-1])
        return ('the checkpoint has %d classes and the graph %d: build with '
                'num_classes=%d, or exclude the logits scope to fine-tune'
                % (checkpoint_shape[-1], graph_shape[-1], checkpoint_shape[-1]))
    if checkpoint_identity.finegrain != graph_identity.finegrain and (
            name.endswith(('Conv_1/weights', 'Conv_2/weights')) or
            '/Logits/' in name):
        return ('finegrain head: the checkpoint %s the last layer at full '
                'width; build with finegrain_classification_mode=%s'
                % ('keeps' if checkpoint_identity.finegrain else 'scales',
                   bool(checkpoint_identity.finegrain)))
    if checkpoint_identity.depth_multiplier != graph_identity.depth_multiplier:
        return ('depth multiplier: the checkpoint is %s at depth_multiplier=%s, '
                'the graph at %s' % (checkpoint_identity.network,
                                     checkpoint_identity.depth_multiplier,
                                     graph_identity.depth_multiplier))
    if checkpoint_identity.variant != graph_identity.variant and \
            checkpoint_identity.variant is not None:
        return ('different layout: the checkpoint is %s, the graph %s'
                % (checkpoint_identity.variant, graph_identity.variant))
    return 'the checkpoint was saved from a different configuration'


def _explain(plan_, allow_missing):
    """The error message for a plan that cannot be carried out, or None."""
    problems = []
    if plan_.mismatched:
        checkpoint_identity = identify_lib.identify(
            reader.variable_shapes(plan_.checkpoint))
        graph_identity = identify_lib.identify(
            {_name(v): v.shape.as_list() for v, _ in plan_.assignments} |
            {_name(v): v.shape.as_list() for v, _, _ in plan_.mismatched} |
            {_name(v): v.shape.as_list() for v in plan_.missing})
        lines = ['%d variable(s) have other shapes in the checkpoint:'
                 % len(plan_.mismatched)]
        for variable, key, shape in plan_.mismatched[:_LISTED]:
            lines.append('  %s: graph %s, checkpoint %s (%s) - likely cause: %s'
                         % (_name(variable), variable.shape.as_list(), shape,
                            key, likely_cause(_name(variable),
                                              variable.shape.as_list(), shape,
                                              checkpoint_identity,
                                              graph_identity)))
        problems.append('\n'.join(lines))
    if plan_.missing and not allow_missing:
        checkpoint_identity = identify_lib.identify(
            reader.variable_shapes(plan_.checkpoint))
        lines = ['%d graph variable(s) are not in the checkpoint (it holds %s):'
                 % (len(plan_.missing), identify_lib.describe(
                     checkpoint_identity))]
        for variable in plan_.missing[:_LISTED]:
            lines.append('  %s (looked for %s)' % (
                _name(variable), _map_name(_name(variable), plan_.scope_map)))
        if len(plan_.missing) > _LISTED:
            lines.append('  ... and %d more' % (len(plan_.missing) - _LISTED))
        lines.append('Pass exclude=[scope] for layers you will train from '
                     'scratch, scope_map={graph prefix: checkpoint prefix} for '
                     'renamed scopes, or allow_missing=True.')
        problems.append('\n'.join(lines))
    if not problems:
        return None
    return 'Cannot restore %s; nothing was assigned.\n%s' % (
        plan_.checkpoint, '\n'.join(problems))


def checked_plan(checkpoint, var_list=None, scope_map=None,
                 moving_average='auto', exclude=(), allow_missing=False,
                 cache_dir=None):
    """`plan(...)`, raising `CheckpointError` unless it can be carried out."""
    plan_ = plan(checkpoint, var_list, scope_map, moving_average, exclude,
                 cache_dir)
    message = _explain(plan_, allow_missing)
    if message:
        raise CheckpointError(message)
    return plan_


def _assign(plan_, sess):
    _, checkpoint_reader = reader.open_checkpoint(plan_.checkpoint)
    values = reader.read_tensors(checkpoint_reader, plan_.checkpoint,
                                 [key for _, key in plan_.assignments])
    for variable, key in plan_.assignments:
        value = values[key]
        if value.dtype != variable.dtype.base_dtype.as_numpy_dtype:
            raise CheckpointError(
                'Cannot restore %s; nothing was assigned: %s is %s in the '
                'checkpoint but %s in the graph.' % (
                    plan_.checkpoint, key, value.dtype,
                    variable.dtype.base_dtype.name))
    # One run assigns every variable through its initializer's value input,
    # which needs no new ops (the graph may be finalized).
    feeds = {variable.initializer.inputs[1]: values[key]
             for variable, key in plan_.assignments}
    sess.run([variable.initializer for variable, _ in plan_.assignments],
             feeds)


def restore(sess, checkpoint, var_list=None, scope_map=None,
            moving_average='auto', exclude=(), allow_missing=False,
            cache_dir=None):
    """Restores a checkpoint into `sess`, all or nothing.

    See `plan` for the arguments; `allow_missing=True` leaves graph
    variables the checkpoint lacks untouched instead of failing.

    Returns:
      The `RestorePlan` that was carried out.

    Raises:
      CheckpointError: missing variables (unless allowed), shape or dtype
        mismatches, or an unreadable checkpoint; no variable is changed.
    """
    plan_ = checked_plan(checkpoint, var_list or sess.graph, scope_map,
                         moving_average, exclude, allow_missing, cache_dir)
    _assign(plan_, sess)
    return plan_


def init_fn(checkpoint, var_list=None, scope_map=None, moving_average='auto',
            exclude=(), allow_missing=False, cache_dir=None):
    """A `fn(sess)` that restores the checkpoint (the `init_fn` of training).

    The plan is made and checked now, so a wrong checkpoint fails before
    training starts; the values are read when `fn` runs.
    """
    plan_ = checked_plan(checkpoint, var_list, scope_map, moving_average,
                         exclude, allow_missing, cache_dir)

    def restore_fn(sess):
        _assign(plan_, sess)
        return plan_

    return restore_fn
