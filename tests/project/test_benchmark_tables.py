"""The benchmark harness (issue 24): README tables generated from the
committed JSON, the ceiling arithmetic, the rotation, the statistics and the
one home of the published MACs.  Fast and without timing: a smoke run of
`benchmarks/run.py --quick` takes minutes (graph builds and four runtime
conversions), so the pure functions are tested here instead."""

import json
import os
import sys

import pytest

import reference

BENCHMARKS = os.path.join(reference.REPO_ROOT, 'benchmarks')
sys.path.insert(0, BENCHMARKS)

import bench  # noqa: E402
import harness  # noqa: E402
import readme_tables  # noqa: E402
import runtimes as runtime_benchmark  # noqa: E402

from slimnets import registry  # noqa: E402

CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
cpu MHz\t\t: 2599.998
flags\t\t: fpu sse4_2 avx fma avx2 avx512f avx512_vnni amx_tile
physical id\t: 0
core id\t\t: 0

processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
cpu MHz\t\t: 2400.000
flags\t\t: fpu sse4_2 avx fma avx2 avx512f avx512_vnni amx_tile
physical id\t: 0
core id\t\t: 0
"""


# ------------------------------------------------------------ README tables

def _readme():
    with open(readme_tables.README) as handle:
        return handle.read()


def test_readme_has_a_region_for_every_table():
    assert sorted(readme_tables.regions(_readme())) == sorted(
        readme_tables.TABLES)


def test_readme_tables_equal_what_the_committed_json_generates():
    text = _readme()
    regenerated, done, pending = readme_tables.rewrite(
        text, readme_tables.PUBLISHED)
    assert sorted(done + pending) == sorted(readme_tables.TABLES)
    for name in done:
        assert readme_tables.regions(regenerated)[name] == \
            readme_tables.regions(text)[name], (
                'README region %r differs from benchmarks/published/%s.json: '
                'run python benchmarks/readme_tables.py' % (name, name))
    # No committed result is left without its table.
    if os.path.isdir(readme_tables.PUBLISHED):
        for entry in os.listdir(readme_tables.PUBLISHED):
            name = entry[:-len('.json')]
            if entry.endswith('.json') and name not in ('ceiling', 'run'):
                assert name in done, entry


def _ceiling(gflops=200.0, peak=332.8):
    return {'threads': 2, 'gflops': gflops, 'numpy_gflops': gflops - 10,
            'tensorflow_gflops': gflops, 'matmul_size': 2048,
            # 2 cores x 16 lanes x 2 FMA units x 2 FLOPs per cycle.
            'fma_peak': harness.fma_peak(peak * 1e3 / 128.0,
                                         ['avx512f', 'fma'], 2)}


def _result(kind, passes, **extra):
    result = {'benchmark': kind, 'quick': False, 'threads': [2],
              'options': {'runs': 3}, 'started': '2026-12-04T21:00:00Z',
              'machine': harness.parse_cpuinfo(CPUINFO),
              'versions': {'tensorflow': '2.21.0'},
              'load_before': [0.1, 0.1, 0.1], 'load_after': [0.2, 0.1, 0.1],
              'loaded': False, 'passes': passes}
    result.update(extra)
    return result


def _speed_result(seconds=(0.010, 0.011, 0.012), ceiling=None):
    """A speed.json as bench.run_passes writes it, from given times."""
    ceiling = ceiling or _ceiling()
    times = {'slim': [2 * s for s in seconds], 'frozen': list(seconds),
             'keras': [3 * s for s in seconds]}
    network = {'network': 'mobilenet_v1_1.0_224',
               'published_macs_millions': bench.published_macs(
                   'mobilenet_v1_1.0_224'),
               'batches': {'1': {'times_s': times,
                                 'max_abs_vs_slim': {'frozen': 1e-7}}}}
    bench._summarize_speed(network, ceiling)  # pylint: disable=protected-access
    return _result('speed', [{'threads': 2, 'ceiling': ceiling,
                              'networks': [network]}])


def test_speed_cells_carry_spread_gflops_and_ceiling_fraction():
    result = _speed_result()
    batch = result['passes'][0]['networks'][0]['batches']['1']
    frozen = batch['cells']['frozen']
    assert (frozen['runs'], frozen['min_s'], frozen['median_s'],
            frozen['max_s']) == (3, 0.010, 0.011, 0.012)
    assert frozen['images_per_s'] == pytest.approx(1 / 0.011)
    # 569 M MACs x 2 FLOPs x 90.9 images/s = 103.5 GFLOP/s of 200.
    assert frozen['gflops'] == pytest.approx(2 * 569 / 0.011 / 1e3)
    assert frozen['ceiling_fraction'] == pytest.approx(frozen['gflops'] / 200)
    assert batch['speedup']['frozen_vs_keras'] == {
        'median': pytest.approx(3), 'min': pytest.approx(3),
        'max': pytest.approx(3), 'rounds': 3}
    assert 'frozen_xla' not in batch['cells']   # no column without XLA


def test_rewrite_fills_a_region_and_a_hand_edit_is_detected(tmp_path):
    folder = tmp_path / 'published'
    folder.mkdir()
    result = _speed_result()
    (folder / 'speed.json').write_text(json.dumps(result))
    text = ('# x\n<!-- bench:speed -->\nold\n<!-- /bench:speed -->\n'
            '<!-- bench:training -->\npending\n<!-- /bench:training -->\n')
    new, done, pending = readme_tables.rewrite(text, str(folder))
    assert (done, pending) == (['speed'], ['training'])
    region = readme_tables.regions(new)['speed']
    assert region == readme_tables.render(result)
    assert '103.5' in region and 'mobilenet_v1_1.0_224' in region
    assert 'Intel(R) Xeon(R) Processor' in region and '2026-12-04' in region
    assert readme_tables.regions(new)['training'] == 'pending\n'
    edited = new.replace('103.5', '130.5')
    again, _, _ = readme_tables.rewrite(edited, str(folder))
    assert readme_tables.regions(again)['speed'] != \
        readme_tables.regions(edited)['speed']


def test_quick_and_loaded_results_do_not_feed_the_readme():
    quick = dict(_speed_result(), quick=True)
    with pytest.raises(readme_tables.Unpublishable, match='quick'):
        readme_tables.render(quick)
    loaded = dict(_speed_result(), loaded=True, load_before=[3.9, 2, 1])
    with pytest.raises(readme_tables.Unpublishable, match='loaded'):
        readme_tables.render(loaded)
    assert '(LOADED)' in readme_tables.render(loaded, allow_loaded=True)


def test_runtimes_summary_reads_the_default_against_the_fastest_peer():
    times = {'default': [1.0, 1.1, 0.9], 'tensorflow': [2.0, 2.0, 2.0],
             'tflite': [1.0, 1.0, 1.0], 'keras': [4.0, 4.0, 4.0]}
    network = {'network': 'mobilenet_v3_small_1.0_224',
               'published_macs_millions': 66,
               'batches': {'1': {'times_s': times, 'default_choice': 'tflite',
                                 'max_abs_vs_tensorflow': {}}}}
    runtime_benchmark.summarize(network, _ceiling())
    batch = network['batches']['1']
    assert batch['fastest_peer'] == 'tflite'
    spread = batch['default_vs_fastest_peer']
    assert (spread['median'], spread['min'], spread['max']) == pytest.approx(
        (1.0, 1 / 1.1, 1 / 0.9))
    assert batch['speed_vs_tensorflow']['tflite']['median'] == 2.0
    table = runtime_benchmark.table(_result('runtimes', [{
        'threads': 2, 'ceiling': _ceiling(), 'networks': [network]}]))
    assert '1.00 (0.91-1.11) vs tflite' in table


# ------------------------------------------------------------ the ceiling

def test_a_cell_above_the_ceiling_fails_the_run():
    with pytest.raises(harness.CeilingExceeded, match='above the ceiling'):
        _speed_result(seconds=(0.004, 0.005, 0.006), ceiling=_ceiling(200.0))
    # 569 M MACs at 1/0.004 images/s is 284.5 GFLOP/s: under 300.
    _speed_result(seconds=(0.004, 0.005, 0.006), ceiling=_ceiling(300.0))


def test_a_matmul_above_the_fma_peak_fails_the_run():
    ceiling = _ceiling(gflops=400.0, peak=332.8)
    with pytest.raises(harness.CeilingExceeded, match='FMA peak'):
        harness.check_cells({}, ceiling)


def test_a_peak_from_the_current_clock_is_only_an_estimate():
    """Without cpufreq (a virtual machine) /proc/cpuinfo gives the current
    clock, below the boost clock: a matmul above that peak is measured, not
    refused, while a cell above the matmul still fails the run."""
    ceiling = _ceiling(gflops=161.1)
    ceiling['fma_peak'] = harness.fma_peak(2445.0, ['avx2', 'fma'], 2,
                                           clock_is_maximum=False)
    assert ceiling['fma_peak']['gflops'] == pytest.approx(156.48)
    harness.check_cells({}, ceiling)
    with pytest.raises(harness.CeilingExceeded, match='above the ceiling'):
        harness.check_cells({'v1': {'gflops_max': 170.0}}, ceiling)


def test_fma_peak_arithmetic():
    peak = harness.fma_peak(2600.0, ['avx2', 'avx512f', 'fma'], 2)
    # 2 cores x 2.6 GHz x 16 lanes x 2 FMA units x 2 FLOPs.
    assert peak['gflops'] == pytest.approx(332.8)
    assert harness.fma_peak(2600.0, ['avx2', 'fma'], 1)['gflops'] == \
        pytest.approx(83.2)
    assert harness.fma_peak(2000.0, ['sse4_2'], 1)['gflops'] == \
        pytest.approx(16.0)
    assert harness.fma_peak(None, ['avx512f'], 2) is None
    assert 'FMA unit' in peak['assumption']


def test_gflops_counts_two_flops_per_multiply_add():
    assert harness.gflops(300, 100.0) == pytest.approx(60.0)


def test_cpuinfo_parsing():
    info = harness.parse_cpuinfo(CPUINFO)
    assert info['model'] == 'Intel(R) Xeon(R) Processor'
    assert info['logical_cpus'] == 2
    assert info['physical_cores'] == 1          # two SMT siblings
    assert info['mhz'] == pytest.approx(2599.998)
    assert info['flags'] == ['sse4_2', 'avx', 'fma', 'avx2', 'avx512f',
                             'avx512_vnni', 'amx_tile']


def test_machine_and_versions_are_recorded():
    machine = harness.machine()
    assert machine['logical_cpus'] >= 1 and machine['model']
    assert set(harness.versions()) >= {'tensorflow', 'keras', 'numpy',
                                       'ai-edge-litert', 'onnxruntime',
                                       'openvino'}


def test_loaded_label():
    assert harness.is_loaded([0.9, 0, 0], [0.1, 0, 0], cpus=2)
    assert not harness.is_loaded([0.3, 0, 0], [0.4, 0, 0], cpus=2)
    assert not harness.is_loaded(None, None, cpus=2)


def test_thread_env_sets_every_pool():
    env = harness.thread_env(1, {'PATH': '/bin'})
    assert env['OMP_NUM_THREADS'] == env['OPENBLAS_NUM_THREADS'] == \
        env['MKL_NUM_THREADS'] == '1'
    assert bench.worker_env(3)['TF_OVERRIDE_GLOBAL_THREADPOOL'] in ('0', '1')


# ------------------------------------------------------------ rotation, stats

def test_rotation_gives_every_runner_every_position():
    labels = ['a', 'b', 'c']
    orders = [harness.rotation(labels, r) for r in range(3)]
    assert orders == [['a', 'b', 'c'], ['b', 'c', 'a'], ['c', 'a', 'b']]
    assert harness.rotation(labels, 4) == orders[1]
    assert harness.rotation([], 2) == []


def test_time_in_turn_rotates_the_runners_every_round():
    calls = []

    def runner(label):
        def run(images):
            calls.append(label)
            return images[:, 0, 0, 0]
        return run

    runners = {label: runner(label) for label in ('a', 'b', 'c')}
    batches = list(bench.time_in_turn(runners, runs=3, batch_iterations=1,
                                      batch_sizes=(1,)))
    timed = calls[9:]                # after 3 warm-up calls per runner
    assert timed == ['a', 'b', 'c', 'b', 'c', 'a', 'c', 'a', 'b']
    _, _, times = batches[0]
    assert all(len(t) == 3 for t in times.values())


def test_stats():
    assert harness.stats([3.0, 1.0, 2.0]) == {'runs': 3, 'min_s': 1.0,
                                              'median_s': 2.0, 'max_s': 3.0}
    cell = harness.rate_stats([0.5, 0.25, 1.0], 2)
    assert (cell['images_per_s'], cell['images_per_s_min'],
            cell['images_per_s_max']) == (4.0, 2.0, 8.0)
    ratio = harness.ratio_stats([2.0, 3.0, 4.0], [1.0, 1.0, 2.0])
    assert (ratio['median'], ratio['min'], ratio['max']) == (2.0, 2.0, 3.0)


# ------------------------------------------------------------ one home of MACs

def _catalogue():
    path = os.path.join(reference.REPO_ROOT, 'slimnets', 'data',
                        'catalogue.json')
    with open(path) as handle:
        return json.load(handle)['checkpoints']


def test_registry_catalogue_and_benchmarks_agree_on_the_macs():
    catalogue = _catalogue()
    for entry in registry.NETWORKS.values():
        rows = [row for row in catalogue if row['input_size'] == 224 and
                row['network'] in (entry.name, entry.base) and
                row['network_kwargs'].get('depth_multiplier') ==
                entry.depth_multiplier]
        assert rows, entry.name
        assert {row['macs_millions'] for row in rows} == {
            entry.macs_millions}, entry.name
    for name in list(bench.NETWORKS) + list(bench.EXTRA_NETWORKS):
        registry_name = bench.network_entry(name)[0]
        assert bench.published_macs(name) == \
            registry.network(registry_name).macs_millions
        # The benchmarks hold no figure of their own.
        assert not any(isinstance(v, (int, float))
                       for v in bench.network_entry(name))


def test_the_quick_network_is_the_smallest_published_one():
    smallest = min(registry.NETWORKS.values(), key=lambda n: n.macs_millions)
    assert bench.network_entry(bench.QUICK_NETWORK)[0] == smallest.name

