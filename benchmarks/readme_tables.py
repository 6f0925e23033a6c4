"""The README's benchmark tables, generated from the committed results.

Each table lives in README.md between marker comments:

    <!-- bench:NAME -->
    ...generated from benchmarks/published/NAME.json...
    <!-- /bench:NAME -->

`python benchmarks/readme_tables.py` rewrites every region whose JSON is in
benchmarks/published/ (written by `benchmarks/run.py`); `--check` only
says which regions differ (exit 1).  Results of a --quick run are refused,
and so are loaded ones (load average above harness.LOADED_PER_CPU per CPU
before or after) unless --allow-loaded, which says so in the caption.
tests/project/test_benchmark_tables.py checks that the README equals what the
committed JSON generates.
"""

import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  pylint: disable=wrong-import-position
import main_job  # noqa: E402  pylint: disable=wrong-import-position
import runtimes as runtime_benchmark  # noqa: E402  pylint: disable=wrong-import-position
import tensorflow_path  # noqa: E402  pylint: disable=wrong-import-position
import training  # noqa: E402  pylint: disable=wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(os.path.dirname(HERE), 'README.md')
PUBLISHED = os.path.join(HERE, 'published')
TABLES = {'speed': bench.table, 'runtimes': runtime_benchmark.table,
          'tensorflow_path': tensorflow_path.table,
          'main_job': main_job.table, 'training': training.table}
_REGION = re.compile(r'(<!-- bench:(\w+) -->\n)(.*?)(<!-- /bench:\2 -->)', re.S)


class Unpublishable(ValueError):
    """A result that must not feed the README (quick or loaded)."""


def regions(text):
    """{name: content} of the README's bench regions."""
    return {match.group(2): match.group(3) for match in _REGION.finditer(text)}


def caption(result):
    """One line: machine, versions, threads, date, load, runs."""
    machine = result['machine']
    flags = [f for f in machine['flags'] if f.startswith(('avx2', 'avx512f',
                                                          'avx512_vnni',
                                                          'amx'))]
    loads = '%s before, %s after' % (
        (result.get('load_before') or ['?'])[0],
        (result.get('load_after') or ['?'])[0])
    return ('%s, %d logical CPUs (%s), TensorFlow %s, %s; load average %s%s; '
            'from `benchmarks/published/%s.json`' % (
                machine['model'], machine['logical_cpus'], ' '.join(flags),
                result['versions'].get('tensorflow'), result['started'][:10],
                loads, ' (LOADED)' if result.get('loaded') else '',
                result['benchmark']))


def render(result, allow_loaded=False):
    """The region text of a result (caption, then the table in a code
    block)."""
    if result.get('quick'):
        raise Unpublishable('%s is from a --quick run' % result['benchmark'])
    if result.get('loaded') and not allow_loaded:
        raise Unpublishable(
            '%s ran on a loaded machine (load %s before, %s after); rerun '
            'idle, or pass --allow-loaded' % (
                result['benchmark'], result.get('load_before'),
                result.get('load_after')))
    table = TABLES[result['benchmark']](result).rstrip('\n')
    return '%s:\n\n```\n%s\n```\n' % (caption(result), table)


def load(folder, name):
    path = os.path.join(folder, name + '.json')
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def rewrite(text, folder, allow_loaded=False):
    """(new README text, [names rewritten], [names without JSON])."""
    done, pending = [], []

    def replace(match):
        name = match.group(2)
        result = load(folder, name)
        if result is None:
            pending.append(name)
            return match.group(0)
        done.append(name)
        return match.group(1) + render(result, allow_loaded) + match.group(4)

    return _REGION.sub(replace, text), done, pending


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--readme', default=README)
    parser.add_argument('--results', default=PUBLISHED)
    parser.add_argument('--check', action='store_true')
    parser.add_argument('--allow-loaded', action='store_true')
    args = parser.parse_args()
    with open(args.readme) as handle:
        text = handle.read()
    try:
        new, done, pending = rewrite(text, args.results, args.allow_loaded)
    except Unpublishable as error:
        sys.exit(str(error))
    if args.check:
        stale = [n for n in done if regions(new)[n] != regions(text)[n]]
        print('stale: %s; pending (no JSON): %s' % (
            ', '.join(stale) or 'none', ', '.join(pending) or 'none'))
        sys.exit(1 if stale else 0)
    if new != text:
        with open(args.readme, 'w') as handle:
            handle.write(new)
    print('rewrote %s; no JSON yet for %s' % (', '.join(done) or 'nothing',
                                              ', '.join(pending) or 'none'))


if __name__ == '__main__':
    main()
