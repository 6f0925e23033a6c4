"""Per-thread arg scopes for tf_slim's `arg_scope` machinery.

tf-slim keeps the arg-scope stack in one module-level list,
`tf_slim.ops.arg_scope._ARGSTACK`, shared by every thread.  Two graphs built
at the same time in two threads then read each other's scopes: thread A
enters `arg_scope([conv2d], weights_regularizer=l2(4e-5))`, thread B enters
one with `l2(1e-3)`, and A's layers get B's regularizer, batch-norm decay and
`is_training`.  TensorFlow's own builder state (the default graph, name and
variable scopes) is already per thread or per graph; this was the one
process-wide stack left.

`install(module)` replaces that list, in the module that owns it, with a
`ThreadLocalArgStack`: a list-like object holding one list per thread.
tf_slim's `arg_scope`, `current_arg_scope` and every `add_arg_scope`
function look the stack up through the module's globals at each call, so
all of them (tf_slim's, `slimnets.slim`'s and user-decorated functions)
share the per-thread stack from then on.  Single-threaded programs see no
difference.

A new thread starts with no arg scope, as it starts with no name scope or
default graph of its own: open the scopes inside the thread that builds.

Other global state touched while building a slim graph was audited and is
safe:

* `_DECORATED_OPS` (which functions accept arg scopes) is written only when
  a function is decorated, normally at import; entries are never removed.
* Layer and variable names are uniquified per graph (name scopes live on
  the graph and are per thread; variable stores are per graph).
* `slimnets.slim.batch_norm` and the networks keep no module-level state.
* The in-place repairs of tf_slim (`slimnets.slim.repair`) happen at import,
  under Python's import lock, and are idempotent assignments.
* TensorFlow's current variable scope is per graph and per thread
  (`_VariableScopeStore` is a `threading.local`), name scopes likewise; the
  variables themselves live in the graph, so two threads building into one
  graph share its variables and collections, as they would in one thread.
"""

import collections.abc
import threading

__all__ = ['ThreadLocalArgStack', 'is_installed', 'install']


class ThreadLocalArgStack(collections.abc.MutableSequence):
    """A list of arg-scope dicts with a separate list for every thread.

    Behaves like tf-slim's `_ARGSTACK` list (index, append, pop, len,
    truth value); each thread's list starts as `[{}]` (no arg scope).
    """

    def __init__(self, initial=None):
        self._local = threading.local()
        if initial is not None:
            # The installing thread keeps what it already had, so an
            # arg_scope open while installing still closes cleanly.
            self._local.stack = initial

    def thread_stack(self):
        """This thread's list of scope dicts; never empty."""
        stack = getattr(self._local, 'stack', None)
        if stack is None:
            stack = self._local.stack = [{}]
        elif not stack:
            stack.append({})
        return stack

    def __getitem__(self, index):
        return self.thread_stack()[index]

    def __setitem__(self, index, value):
        self.thread_stack()[index] = value

    def __delitem__(self, index):
        del self.thread_stack()[index]

    def __len__(self):
        return len(self.thread_stack())

    def insert(self, index, value):
        self.thread_stack().insert(index, value)

    def __repr__(self):
        return 'ThreadLocalArgStack(%r)' % (self.thread_stack(),)


def is_installed(module):
    """Whether `module`'s arg-scope stack is already per thread."""
    return isinstance(getattr(module, '_ARGSTACK', None), ThreadLocalArgStack)


def install(module):
    """Makes the arg-scope stack of `module` (tf_slim.ops.arg_scope) per thread.

    Idempotent: a second call changes nothing.

    Returns:
      True if the stack was replaced, False if it already was per thread.
    """
    if is_installed(module):
        return False
    old = module._ARGSTACK  # pylint: disable=protected-access
    stack = ThreadLocalArgStack(initial=list(old))
    module._ARGSTACK = stack  # pylint: disable=protected-access
    # tf_slim reads the stack only through this helper; it must return the
    # calling thread's list (mutations go straight to it).
    module._get_arg_stack = stack.thread_stack  # pylint: disable=protected-access
    return True
