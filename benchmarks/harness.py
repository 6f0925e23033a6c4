"""What every benchmark here records, so that a reader can judge a figure.

The pieces `benchmarks/run.py` and each benchmark share:

  machine()        CPU model, logical and physical cores, the vector flags
                   that matter (AVX2, AVX-512, VNNI, AMX), the clock and
                   where it was read;
  versions()       tensorflow, keras, numpy, ai-edge-litert, onnxruntime,
                   openvino (from the installed metadata);
  load_average()   os.getloadavg(), recorded before and after each
                   benchmark: a loaded run shows as one;
  thread_env(n)    the environment a worker process gets so that every
                   runtime in it runs on n threads (BLAS variables too);
  apply_threads(n) sets TensorFlow's process-wide pools to n threads;
  rotation()       the order of the runners in round r (it rotates, so
                   that carry-over from one runner to the next does not
                   always land on the same neighbour);
  stats()          runs, min, median, max of a list of seconds;
  fma_peak()       the theoretical fp32 FMA peak from clock and vector
                   width (assumptions stated in the result);
  ceiling()        a large fp32 matmul through numpy's BLAS and through
                   TensorFlow, plus fma_peak(): the compute ceiling;
  gflops(), check_cells()  achieved GFLOP/s of a cell from the published
                   MACs (slimnets.registry, the one home of that figure)
                   and its fraction of the ceiling; a cell above the
                   ceiling fails the run (CeilingExceeded).

Run `python benchmarks/harness.py --ceiling --threads N` to print the
ceiling as JSON (a fresh process, so the thread settings take effect).
"""

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

# Vector flags worth recording (as /proc/cpuinfo spells them).
FLAGS = ('sse4_2', 'avx', 'fma', 'avx2', 'avx512f', 'avx512bw', 'avx512vl',
         'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'avx512_fp16', 'amx_tile',
         'amx_bf16', 'amx_int8')
DISTRIBUTIONS = ('tensorflow', 'keras', 'numpy', 'ai-edge-litert',
                 'onnxruntime', 'openvino', 'tf2onnx')
# Assumed for the FMA peak: two fp32 FMA units per core (Intel since
# Haswell, server parts with AVX-512 included); each FMA is 2 FLOPs.
FMA_UNITS_ASSUMED = 2
MATMUL_SIZE = 2048
# Load average per logical CPU above which a run is labelled loaded.
LOADED_PER_CPU = 0.25


class CeilingExceeded(RuntimeError):
    """A cell's achieved GFLOP/s is above the ceiling: the timing, the MACs
    or the ceiling is wrong, and the run must not be published."""


def _cpuinfo():
    try:
        with open('/proc/cpuinfo') as handle:
            return handle.read()
    except OSError:
        return ''


def parse_cpuinfo(text):
    """The CPU as /proc/cpuinfo text describes it.

    Returns:
      dict: model, logical_cpus (processor entries), physical_cores
      (distinct (physical id, core id) pairs, else logical_cpus), flags
      (those of FLAGS present), mhz (largest 'cpu MHz', or None).
    """
    model, flags, mhz = None, set(), []
    cores, logical, physical_id = set(), 0, '0'
    for line in text.splitlines():
        key, _, value = line.partition(':')
        key, value = key.strip(), value.strip()
        if key == 'processor':
            logical += 1
        elif key == 'model name' and model is None:
            model = value
        elif key == 'flags' and not flags:
            flags = set(value.split())
        elif key == 'cpu MHz':
            mhz.append(float(value))
        elif key == 'physical id':
            physical_id = value
        elif key == 'core id':
            cores.add((physical_id, value))
    return {'model': model or platform.processor() or platform.machine(),
            'logical_cpus': logical or os.cpu_count(),
            'physical_cores': len(cores) or logical or os.cpu_count(),
            'flags': [f for f in FLAGS if f in flags],
            'mhz': max(mhz) if mhz else None}


def _max_freq_mhz():
    path = '/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq'
    try:
        with open(path) as handle:
            return int(handle.read().strip()) / 1000.0, path
    except (OSError, ValueError):
        return None, None


def machine():
    """The machine, as recorded in every result file."""
    info = parse_cpuinfo(_cpuinfo())
    mhz, source = _max_freq_mhz()
    if mhz is None and info['mhz']:
        mhz, source = info['mhz'], '/proc/cpuinfo cpu MHz (current clock)'
    info.update({'mhz': mhz, 'mhz_source': source,
                 'cpu_count': os.cpu_count(),
                 'affinity': len(os.sched_getaffinity(0))
                 if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
                 'platform': platform.platform(),
                 'python': platform.python_version()})
    return info


def versions():
    """Installed versions of the libraries that run the benchmarks."""
    found = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def load_average():
    """(1, 5, 15)-minute load averages, or None where unknown."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def is_loaded(load_before, load_after, cpus):
    """Whether a run's 1-minute load, before or after, was above
    LOADED_PER_CPU per logical CPU."""
    loads = [x[0] for x in (load_before, load_after) if x]
    return bool(loads) and max(loads) > LOADED_PER_CPU * cpus


def thread_env(threads, environ=None):
    """A copy of `environ` (default os.environ) for a worker that runs on
    `threads` threads: the BLAS/OpenMP variables numpy and oneDNN read."""
    env = dict(os.environ if environ is None else environ)
    for name in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
        env[name] = str(threads)
    env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    return env


def apply_threads(threads):
    """TensorFlow's intra- and inter-op pools to `threads` (before its first
    op).  Returns what TensorFlow then reports."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return {'tensorflow_intra_op': tf.config.threading.get_intra_op_parallelism_threads(),
            'tensorflow_inter_op': tf.config.threading.get_inter_op_parallelism_threads()}


def rotation(labels, round_index):
    """`labels` (a sequence) in the order of round `round_index`: rotated
    by one each round (A B C, B C A, C A B, ...)."""
    labels = list(labels)
    if not labels:
        return labels
    shift = round_index % len(labels)
    return labels[shift:] + labels[:shift]


def stats(seconds):
    """runs, min_s, median_s, max_s of a list of seconds."""
    seconds = np.asarray(seconds, dtype=float)
    return {'runs': int(seconds.size), 'min_s': float(seconds.min()),
            'median_s': float(np.median(seconds)),
            'max_s': float(seconds.max())}


def rate_stats(seconds, items):
    """stats() plus items/s at the median (and at the fastest and slowest
    run: images_per_s_max and _min)."""
    cell = stats(seconds)
    cell.update({'images_per_s': items / cell['median_s'],
                 'images_per_s_min': items / cell['max_s'],
                 'images_per_s_max': items / cell['min_s']})
    return cell


def ratio_stats(numerator_seconds, denominator_seconds):
    """median, min, max over rounds of numerator / denominator time in the
    same round (timed in turn, so a change of load falls on both)."""
    ratios = (np.asarray(numerator_seconds, dtype=float) /
              np.asarray(denominator_seconds, dtype=float))
    return {'median': float(np.median(ratios)), 'min': float(ratios.min()),
            'max': float(ratios.max()), 'rounds': int(ratios.size)}


def fma_peak(mhz, flags, cores, clock_is_maximum=True):
    """Theoretical fp32 peak in GFLOP/s: cores x GHz x lanes x FMA units x 2.

    Lanes: 16 with avx512f, 8 with avx2 (or avx), else 4; FMA units per
    core: FMA_UNITS_ASSUMED (an assumption: some parts have one 512-bit
    unit).  None when the clock is unknown.  `clock_is_maximum`: the clock
    is the CPU's maximum (cpufreq's cpuinfo_max_freq); a virtual machine
    without cpufreq reports only the current clock in /proc/cpuinfo, below
    its boost clock, and the peak is then a lower estimate that a matmul
    may pass.
    """
    if not mhz:
        return None
    flags = set(flags)
    lanes = 16 if 'avx512f' in flags else 8 if flags & {'avx2', 'avx'} else 4
    units = FMA_UNITS_ASSUMED if 'fma' in flags else 1
    return {'gflops': cores * mhz / 1e3 * lanes * units * 2,
            'cores': cores, 'mhz': mhz, 'fp32_lanes': lanes,
            'fma_units_per_core': units,
            'clock_is_maximum': bool(clock_is_maximum),
            'assumption': '%d FMA unit(s) per core, 2 FLOPs per FMA, '
                          'physical cores (not SMT siblings), the clock '
                          'held under load' % units}


def _best_rate(multiply, repeats, size):
    multiply()
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        multiply()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best / 1e9


def blas():
    """Which BLAS numpy uses (numpy.show_config)."""
    try:
        config = np.show_config(mode='dicts')
        found = config['Build Dependencies']['blas']
        return {'name': found.get('name'), 'version': found.get('version'),
                'configuration': found.get('openblas configuration')}
    except Exception:  # pylint: disable=broad-except
        return None


def ceiling(threads, repeats=25, size=MATMUL_SIZE):
    """The compute ceiling on `threads` threads (call in a process whose
    thread settings are `thread_env(threads)` and `apply_threads`).

    Returns:
      dict: numpy_gflops, tensorflow_gflops (best of `repeats` fp32
      size x size matmuls), gflops (the larger), blas, fma_peak (see
      fma_peak(), for min(threads, physical cores)), threads.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    rng = np.random.RandomState(0)
    a = rng.standard_normal((size, size)).astype(np.float32)
    b = rng.standard_normal((size, size)).astype(np.float32)
    numpy_rate = _best_rate(lambda: np.dot(a, b), repeats, size)
    ta, tb = tf.constant(a), tf.constant(b)
    matmul = tf.function(tf.matmul)
    tf_rate = _best_rate(lambda: matmul(ta, tb).numpy(), repeats, size)
    info = machine()
    return {'threads': threads, 'matmul_size': size, 'repeats': repeats,
            'numpy_gflops': numpy_rate, 'tensorflow_gflops': tf_rate,
            'gflops': max(numpy_rate, tf_rate), 'blas': blas(),
            'fma_peak': fma_peak(info['mhz'], info['flags'],
                                 min(threads, info['physical_cores']),
                                 clock_is_maximum=str(
                                     info['mhz_source']).endswith(
                                         'cpuinfo_max_freq'))}


def published_macs(registry_name):
    """Published multiply-adds (millions) of a registry network at 224:
    `slimnets.registry`, the one home of that figure."""
    from slimnets import registry  # pylint: disable=import-outside-toplevel
    return registry.network(registry_name).macs_millions


def gflops(macs_millions, images_per_s):
    """Achieved GFLOP/s: 2 FLOPs per multiply-add."""
    return 2.0 * macs_millions * images_per_s / 1e3


def add_gflops(cell, macs_millions, ceiling_result):
    """Adds gflops and ceiling_fraction (of the measured matmul; and of
    the FMA peak where known) to a rate_stats() cell, from its fastest run
    too (gflops_max), which is what check_cells() checks."""
    cell['gflops'] = gflops(macs_millions, cell['images_per_s'])
    cell['gflops_max'] = gflops(macs_millions, cell['images_per_s_max'])
    cell['ceiling_fraction'] = cell['gflops'] / ceiling_result['gflops']
    peak = ceiling_result.get('fma_peak')
    if peak:
        cell['fma_peak_fraction'] = cell['gflops'] / peak['gflops']
    return cell


def check_cells(cells, ceiling_result):
    """Raises CeilingExceeded if any {label: cell} has a run above the
    ceiling measured in the same run, or the matmul is above the FMA peak
    of the CPU's maximum clock.  A peak from the current clock only (no
    cpufreq: a virtual machine) is a lower estimate: a matmul above it is
    reported by `fma_peak_fraction` above 1, not refused."""
    limit = ceiling_result['gflops']
    peak = ceiling_result.get('fma_peak')
    if peak and peak.get('clock_is_maximum', True) and limit > peak['gflops']:
        raise CeilingExceeded(
            'the matmul ran at %.1f GFLOP/s, above the FMA peak of %.1f: the '
            'clock (%s) or the peak assumptions are wrong' % (
                limit, peak['gflops'], peak['mhz']))
    for label, cell in cells.items():
        if cell.get('gflops_max', 0) > limit:
            raise CeilingExceeded(
                '%s: %.1f GFLOP/s in its fastest run, above the ceiling of '
                '%.1f measured in the same run: the timing, the MACs or the '
                'ceiling is wrong' % (label, cell['gflops_max'], limit))


def environment(env):
    """The variables of `env` that change how the runtimes run."""
    return {name: env.get(name) for name in (
        'TF_OVERRIDE_GLOBAL_THREADPOOL', 'TF_XLA_FLAGS', 'OMP_NUM_THREADS',
        'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'TF_ENABLE_ONEDNN_OPTS')}


def header(kind, args_dict, threads, quick):
    """The fields every result file starts with."""
    return {'benchmark': kind, 'quick': bool(quick), 'threads': threads,
            'options': args_dict, 'machine': machine(),
            'versions': versions(),
            'environment': environment(os.environ),
            'started': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
            'load_before': load_average()}


def finish(result):
    """Stamps load_after and `loaded` on a result (in place)."""
    result['load_after'] = load_average()
    result['loaded'] = is_loaded(result.get('load_before'),
                                 result['load_after'],
                                 result['machine']['logical_cpus'])
    return result


def write_json(path, data):
    """Writes `data` to `path` atomically (a temporary file renamed)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=folder, suffix='.tmp')
    with os.fdopen(handle, 'w') as out:
        json.dump(data, out, indent=1, sort_keys=True)
        out.write('\n')
    os.replace(scratch, path)
    return path


def worker_json(completed, what):
    """The JSON a worker printed on its last stdout line; exits with its
    stderr when it failed."""
    if completed.returncode:
        sys.exit('%s failed:\n%s' % (what, completed.stderr[-4000:]))
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_ceiling(threads, repeats):
    """ceiling() in a fresh process run with thread_env(threads)."""
    import subprocess  # pylint: disable=import-outside-toplevel
    completed = subprocess.run(
        [sys.executable, os.path.abspath(__file__), '--ceiling', '--threads',
         str(threads), '--repeats', str(repeats)],
        env=thread_env(threads), capture_output=True, text=True, check=False)
    return worker_json(completed, 'the ceiling on %d threads' % threads)


def load_ceiling(path, threads, repeats):
    """The ceiling for `threads` from a ceiling.json written by run.py, else
    measured now."""
    if path and os.path.exists(path):
        with open(path) as handle:
            recorded = json.load(handle)
        for entry in recorded.get('ceilings', []):
            if entry['threads'] == threads:
                return entry
    return measure_ceiling(threads, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--ceiling', action='store_true')
    parser.add_argument('--threads', type=int, default=os.cpu_count())
    parser.add_argument('--repeats', type=int, default=25)
    args = parser.parse_args()
    if args.ceiling:
        apply_threads(args.threads)
        print(json.dumps(ceiling(args.threads, args.repeats)))


if __name__ == '__main__':
    main()
