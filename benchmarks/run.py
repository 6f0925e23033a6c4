"""Every benchmark of the README in one go, one JSON file each.

    .venv/bin/python benchmarks/run.py                 # the full run
    .venv/bin/python benchmarks/run.py --quick         # a smoke run
    .venv/bin/python benchmarks/run.py --only runtimes main_job

In order, each in fresh processes:

  ceiling          harness.ceiling on --threads and on 1 thread: fp32
                   matmuls through numpy's BLAS and TensorFlow, and the FMA
                   peak (ceiling.json); every later cell is judged against
                   the ceiling of its thread count, and a cell above it
                   fails the run;
  speed            bench.py: slim, frozen, XLA (when it compiles) and Keras
                   (speed.json);
  runtimes         runtimes.py: every runtime against Keras (runtimes.json);
  tensorflow_path  tensorflow_path.py: TensorFlow's path against TFLite,
                   with the one-thread session (tensorflow_path.json);
  main_job         main_job.py: classify and eval over 1,000 JPEGs against
                   the Keras pipeline and the network alone (main_job.json);
  training         training.py --profile: slimnets train against Keras fit,
                   with the slim step's profile (training.json).

speed, runtimes and tensorflow_path run twice: on --threads threads (default
all cores) and on one; main_job and training on --threads.  Every file
records the machine, the library versions, the thread counts, the runs and
min/median/max of every cell and the load average before and after.
A full run writes benchmarks/published/ (committed; `readme_tables.py`
then rewrites the README's tables from it); --quick (2 rounds of the
smallest network, 40 images, a few training steps at 96x96) writes
benchmarks/results/quick/, which git ignores: a smoke run is never
published.  run.json lists what ran, for how long.
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  pylint: disable=wrong-import-position
import harness  # noqa: E402  pylint: disable=wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLISHED = os.path.join(HERE, 'published')
QUICK = os.path.join(HERE, 'results', 'quick')
BENCHMARKS = ('ceiling', 'speed', 'runtimes', 'tensorflow_path', 'main_job',
              'training')
SCRIPTS = {'speed': 'bench.py', 'runtimes': 'runtimes.py',
           'tensorflow_path': 'tensorflow_path.py', 'main_job': 'main_job.py',
           'training': 'training.py'}


def thread_counts(threads):
    """The passes of the inference benchmarks: `threads`, then 1."""
    return [threads] if threads == 1 else [threads, 1]


def command(name, args, output_dir, scratch):
    """The command line that runs benchmark `name` (not 'ceiling')."""
    script = [sys.executable, os.path.join(HERE, SCRIPTS[name]),
              '--output-dir', output_dir]
    quick = ['--quick'] if args.quick else []
    if name in ('speed', 'runtimes', 'tensorflow_path'):
        extra = ['--one-thread-session'] if name == 'tensorflow_path' else []
        return script + quick + extra + [
            '--threads'] + [str(t) for t in thread_counts(args.threads)] + [
            '--ceiling-file', os.path.join(output_dir, 'ceiling.json')]
    extra = ['--profile'] if name == 'training' else []
    return script + quick + extra + ['--threads', str(args.threads),
                                     '--scratch', scratch]


def measure_ceilings(args, output_dir):
    result = harness.header('ceiling', {'repeats': args.repeats},
                            thread_counts(args.threads), args.quick)
    result['ceilings'] = [harness.measure_ceiling(t, args.repeats)
                          for t in thread_counts(args.threads)]
    harness.finish(result)
    for entry in result['ceilings']:
        peak = entry['fma_peak']
        print('ceiling on %d thread(s): %.1f GFLOP/s (numpy %.1f, TensorFlow '
              '%.1f)%s' % (entry['threads'], entry['gflops'],
                           entry['numpy_gflops'], entry['tensorflow_gflops'],
                           '; FMA peak %.1f' % peak['gflops'] if peak else ''))
        if peak and entry['gflops'] > peak['gflops']:
            raise harness.CeilingExceeded(
                'the matmul (%.1f GFLOP/s) is above the FMA peak (%.1f): the '
                'clock or the peak assumptions are wrong' % (
                    entry['gflops'], peak['gflops']))
    return harness.write_json(os.path.join(output_dir, 'ceiling.json'), result)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run (not published): %s, 2 rounds' %
                        bench.QUICK_NETWORK)
    parser.add_argument('--threads', type=int, default=bench.default_threads(),
                        help='threads of every runtime (default all cores); '
                             'the inference benchmarks also run on one')
    parser.add_argument('--only', nargs='+', choices=BENCHMARKS,
                        help='only these benchmarks (the ceiling is measured '
                             'whenever a later one needs it)')
    parser.add_argument('--output-dir', help='default: benchmarks/published '
                        '(benchmarks/results/quick with --quick)')
    parser.add_argument('--scratch', help='generated images and records '
                        '(default: under the output folder\'s results/)')
    args = parser.parse_args()
    args.repeats = 3 if args.quick else 25
    output_dir = args.output_dir or (QUICK if args.quick else PUBLISHED)
    scratch = args.scratch or os.path.join(HERE, 'results', 'scratch')
    chosen = list(args.only or BENCHMARKS)
    needs_ceiling = any(n in chosen for n in ('speed', 'runtimes',
                                              'tensorflow_path'))
    if needs_ceiling and 'ceiling' not in chosen and not os.path.exists(
            os.path.join(output_dir, 'ceiling.json')):
        chosen.insert(0, 'ceiling')
    os.makedirs(output_dir, exist_ok=True)
    index = harness.header('run', {'benchmarks': chosen,
                                   'output_dir': output_dir},
                           args.threads, args.quick)
    index['ran'] = []
    for name in BENCHMARKS:
        if name not in chosen:
            continue
        print('== %s' % name, flush=True)
        start, load = time.perf_counter(), harness.load_average()
        if name == 'ceiling':
            measure_ceilings(args, output_dir)
            line = ['harness.measure_ceiling']
        else:
            line = command(name, args, output_dir, scratch)
            completed = subprocess.run(line, check=False)
            if completed.returncode:
                sys.exit('%s failed (exit %d): %s' % (
                    name, completed.returncode, ' '.join(line)))
        index['ran'].append({'benchmark': name, 'command': line[1:],
                             'seconds': time.perf_counter() - start,
                             'load_before': load,
                             'load_after': harness.load_average()})
    harness.finish(index)
    harness.write_json(os.path.join(output_dir, 'run.json'), index)
    print('wrote %s (%s)%s' % (output_dir, ', '.join(chosen),
                               '; a loaded run: not for publishing'
                               if index['loaded'] else ''))


if __name__ == '__main__':
    main()
