"""The layering of ARCHITECTURE.md, enforced: no import looks up."""

import ast
import os
import re

import reference

PACKAGE = os.path.join(reference.REPO_ROOT, 'slimnets')


def _layers():
    """{module pattern: layer} from the table in ARCHITECTURE.md."""
    with open(os.path.join(reference.REPO_ROOT, 'ARCHITECTURE.md')) as handle:
        text = handle.read()
    table = text[text.index('<!-- layers'):]
    layers = {}
    for match in re.finditer(r'^\| (\d) \| (.*?) \|', table, re.M):
        for name in re.findall(r'`([\w.*]+)`', match.group(2)):
            layers[name] = int(match.group(1))
    return layers


LAYERS = _layers()


def layer_of(module):
    """The layer of a dotted module name (exact entry, else 'parent.*')."""
    if module in LAYERS:
        return LAYERS[module]
    parts = module.split('.')
    for cut in range(len(parts) - 1, 0, -1):
        pattern = '.'.join(parts[:cut]) + '.*'
        if pattern in LAYERS:
            return LAYERS[pattern]
    return None


def _modules():
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith('.py'):
                path = os.path.join(root, name)
                dotted = os.path.relpath(path, reference.REPO_ROOT)[:-3].replace(
                    os.sep, '.')
                if dotted.endswith('.__init__'):
                    dotted = dotted[:-len('.__init__')]
                yield dotted, path


def _imports(path, module):
    """[(imported slimnets module, line, inside a function)]."""
    with open(path) as handle:
        tree = ast.parse(handle.read())
    package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function)
                             for a in child.names if a.name.startswith('slimnets'))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ''
                if child.level:
                    base = '.'.join(package.split('.')[:len(package.split('.')) -
                                                      child.level + 1] +
                                    ([base] if base else []))
                if base.startswith('slimnets'):
                    for alias in child.names:
                        candidate = base + '.' + alias.name
                        target = candidate if layer_of(candidate) is not None and \
                            _is_module(candidate) else base
                        found.append((target, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def _is_module(dotted):
    path = os.path.join(reference.REPO_ROOT, *dotted.split('.'))
    return os.path.isfile(path + '.py') or os.path.isdir(path)


def test_every_module_has_a_layer():
    missing = [m for m, _ in _modules() if layer_of(m) is None]
    assert not missing, 'add these to the table in ARCHITECTURE.md: %s' % missing


def test_no_import_looks_up():
    violations = []
    for module, path in _modules():
        own = layer_of(module)
        for target, line, _ in _imports(path, module):
            if layer_of(target) is not None and layer_of(target) > own:
                violations.append('%s:%d imports %s (layer %d > %d)' % (
                    module, line, target, layer_of(target), own))
    assert not violations, violations


def test_only_the_command_line_imports_inside_functions():
    """Lazy imports of slimnets modules are for the CLI's start-up time."""
    lazy = ['%s:%d %s' % (module, line, target)
            for module, path in _modules() if layer_of(module) < 8
            for target, line, inside in _imports(path, module) if inside]
    assert not lazy, lazy


def test_the_checkpoint_layer_never_needs_inference():
    for module, path in _modules():
        if module.startswith('slimnets.checkpoints'):
            for target, line, _ in _imports(path, module):
                assert not target.startswith(('slimnets.inference',
                                              'slimnets.export',
                                              'slimnets.training',
                                              'slimnets.cli')), (module, line)


def _dynamic_imports(path):
    """[(line, first argument node)] of `importlib.import_module(...)` and
    `__import__(...)` calls: imports the static scan above cannot see."""
    with open(path) as handle:
        tree = ast.parse(handle.read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and (
                (isinstance(node.func, ast.Attribute) and
                 node.func.attr == 'import_module') or
                (isinstance(node.func, ast.Name) and
                 node.func.id in ('__import__', 'import_module'))):
            found.append((node.lineno, node.args[0]))
    return found


# The modules that import by a name computed at run time, and what each may
# name: the network table names builders and arg scopes ('module:function'
# strings, checked below); `runtimes.base.require` names optional
# third-party packages only.
DYNAMIC_IMPORTERS = ('slimnets.registry', 'slimnets.runtimes.base')


def test_imports_by_name_are_seen_and_never_look_up():
    from slimnets import registry
    from slimnets.runtimes import base

    unexpected = []
    for module, path in _modules():
        for line, argument in _dynamic_imports(path):
            if isinstance(argument, ast.Constant):
                target = argument.value
                if target.startswith('slimnets') and \
                        layer_of(target) > layer_of(module):
                    unexpected.append('%s:%d imports %s' % (module, line,
                                                            target))
            elif module not in DYNAMIC_IMPORTERS:
                unexpected.append('%s:%d imports a computed name' % (module,
                                                                     line))
    assert not unexpected, unexpected
    references = [n.builder for n in registry.NETWORKS.values()] + [
        f.arg_scope for f in registry.FAMILIES.values()]
    for named in references:
        target = named.partition(':')[0]
        assert layer_of(target) is not None, named
        assert layer_of(target) <= layer_of('slimnets.registry'), named
    for modules, _ in base.PACKAGES.values():
        assert not any(m.startswith('slimnets') for m in modules), modules


# Paths that never move: the reference's module paths, the entry points,
# and every module the README documents.
FIXED_PATHS = (
    'slimnets.mobilenet_v1', 'slimnets.mobilenet.mobilenet',
    'slimnets.mobilenet.conv_blocks', 'slimnets.mobilenet.mobilenet_v2',
    'slimnets.mobilenet.mobilenet_v3', 'slimnets.nets_factory',
    'slimnets.slim', 'slimnets.deployment.model_deploy', 'slimnets.legacy',
    'slimnets.legacy.train_image_classifier',
    'slimnets.legacy.eval_image_classifier',
    'slimnets.legacy.export_inference_graph', 'slimnets.cli',
    'slimnets.inference', 'slimnets.checkpoints', 'slimnets.export',
    'slimnets.quantize', 'slimnets.quantized_tflite', 'slimnets.optimize',
    'slimnets.runtimes', 'slimnets.training', 'slimnets.features',
    'slimnets.errors', 'slimnets.registry', 'slimnets.model_info',
    'slimnets.keras_models', 'slimnets.datasets')


def test_the_fixed_paths_import():
    import importlib

    for path in FIXED_PATHS:
        importlib.import_module(path)
    from slimnets.cli import main
    assert callable(main)


def test_every_public_module_declares_all():
    missing = []
    for module, path in _modules():
        name = module.rpartition('.')[2]
        if name.startswith('_') and name != '__init__':
            continue   # private (and __main__)
        with open(path) as handle:
            tree = ast.parse(handle.read())
        defines = any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Assign,
                                     ast.ImportFrom)) for n in tree.body)
        declares = any(isinstance(n, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == '__all__' for t in n.targets)
            for n in tree.body)
        if defines and not declares and module != 'slimnets':
            missing.append(module)
    assert not missing, 'declare __all__ in %s' % missing


def test_every_name_in_all_exists():
    import importlib

    for module, _ in _modules():
        if module.endswith('__main__'):
            continue
        loaded = importlib.import_module(module)
        for name in getattr(loaded, '__all__', ()):
            assert hasattr(loaded, name), '%s.__all__ names %s' % (module, name)


def test_the_readme_documents_public_names_only():
    """Every `slimnets.X.Y` the README names exists, and a name that is not
    a module is in its module's __all__."""
    import importlib

    with open(os.path.join(reference.REPO_ROOT, 'README.md')) as handle:
        text = handle.read()
    dotted = sorted(set(re.findall(r'\bslimnets(?:\.[A-Za-z_]\w*)+', text)))
    assert dotted
    problems = []
    for name in dotted:
        parts = name.split('.')
        module, rest = None, []
        for cut in range(len(parts), 0, -1):
            try:
                module = importlib.import_module('.'.join(parts[:cut]))
            except ImportError:
                continue
            rest = parts[cut:]
            break
        if rest and (rest[0] in ('json', 'py', 'txt') or rest[0].isupper()):
            continue  # a file name (slimnets.json), a placeholder (NAME)
        owner = module
        for index, attribute in enumerate(rest):
            if index == 0 and attribute not in getattr(owner, '__all__', ()):
                problems.append('%s: %s is not in %s.__all__' % (
                    name, attribute, owner.__name__))
                break
            if not hasattr(owner, attribute):
                problems.append('%s does not exist' % name)
                break
            owner = getattr(owner, attribute)
    assert not problems, problems


def test_the_readme_imports_work():
    """Every `from slimnets... import ...` line of the README imports."""
    import importlib
    import importlib.util

    with open(os.path.join(reference.REPO_ROOT, 'README.md')) as handle:
        text = handle.read()
    found = re.findall(r'^from (slimnets[\w.]*) import ([\w, ]+)$', text, re.M)
    assert found
    for module, names in found:
        loaded = importlib.import_module(module)
        for name in (n.strip() for n in names.split(',')):
            assert hasattr(loaded, name) or importlib.util.find_spec(
                '%s.%s' % (module, name)), '%s.%s' % (module, name)


def test_the_tensorflow_free_modules_import_without_tensorflow():
    import subprocess
    import sys

    code = ('import sys\n'
            'import slimnets.errors, slimnets.graph_format, slimnets.fileio\n'
            'import slimnets.tflog, slimnets.images, slimnets.train_config\n'
            'import slimnets.cluster, slimnets.model_info, slimnets.labels\n'
            'import slimnets.registry, slimnets.cli\n'
            'assert "tensorflow" not in sys.modules, "tensorflow imported"\n')
    result = subprocess.run([sys.executable, '-c', code], cwd=reference.REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
