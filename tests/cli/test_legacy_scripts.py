"""research/slim's scripts with their own flag lines: train, evaluate and
export a MobileNet v1 0.25 on a generated flowers-layout TFRecord dataset,
inconsistent cluster flags refused on one line, and the reference's
cluster flags translated onto a cluster role."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf2
import tensorflow.compat.v1 as tf
from google.protobuf import text_format

from slimnets import nets_factory
from slimnets import optimize
from slimnets import runtimes
from slimnets.datasets import builder as dataset_build
from slimnets.legacy import eval_image_classifier
from slimnets.legacy import export_inference_graph
from slimnets.legacy import train_image_classifier
from slimnets.registry import ModelSpec

from conftest import free_ports
from conftest import run_main

SIZE = 64
_VARIABLE_OPS = ('VarHandleOp',)  # TensorFlow 2's resource variables
STEPS = 3


def run_script(module, *args):
    """`module.main(args)` in this process, its output captured."""
    return run_main(module.main, *args)


@pytest.fixture(scope='module')
def flowers_dir(tmp_path_factory):
    """3 classes x 6 PNGs written by `dataset_build.build`, renamed to
    research/slim's flowers layout (flowers_SPLIT_0000N-of-0000M.tfrecord,
    labels.txt 'N:name')."""
    tree = tmp_path_factory.mktemp('tree')
    rng = np.random.RandomState(0)
    for index, name in enumerate(('daisy', 'rose', 'tulip')):
        os.makedirs(tree / name)
        for number in range(6):
            pixels = np.full((40, 40, 3), 60 * index, np.int32) + \
                rng.randint(0, 50, (40, 40, 3))
            (tree / name / ('%d.png' % number)).write_bytes(
                tf2.io.encode_png(pixels.astype(np.uint8)).numpy())
    built = tmp_path_factory.mktemp('built')
    dataset_build.build(str(tree), str(built), shards=2,
                        validation_fraction=0.25, workers=1, progress=False)
    output = tmp_path_factory.mktemp('flowers')
    for name in os.listdir(built):
        if name.startswith('.'):
            continue
        target = name if name == 'labels.txt' else 'flowers_%s.tfrecord' % (
            name.replace('-', '_', 1))
        shutil.copy(built / name, output / target)
    assert sorted(os.listdir(output)) == [
        'flowers_train_00000-of-00002.tfrecord',
        'flowers_train_00001-of-00002.tfrecord',
        'flowers_validation_00000-of-00001.tfrecord', 'labels.txt']
    return output


@pytest.fixture(scope='module')
def trained(flowers_dir, small_checkpoint, tmp_path_factory):
    """The fine-tuning line of research/slim's README (flowers, logits
    only), shortened to 3 steps of batch 4 at 64 px: (train_dir, result)."""
    train_dir = tmp_path_factory.mktemp('train')
    completed = run_script(
        train_image_classifier,
        '--train_dir=%s' % train_dir, '--dataset_name=flowers',
        '--dataset_split_name=train', '--dataset_dir=%s' % flowers_dir,
        '--model_name=mobilenet_v1_025',
        '--checkpoint_path=%s' % small_checkpoint,
        '--checkpoint_exclude_scopes=MobilenetV1/Logits',
        '--trainable_scopes=MobilenetV1/Logits',
        '--max_number_of_steps=%d' % STEPS, '--batch_size=4',
        '--learning_rate=0.01', '--learning_rate_decay_type=fixed',
        '--save_interval_secs=60', '--save_summaries_secs=60',
        '--log_every_n_steps=1', '--optimizer=rmsprop',
        '--weight_decay=0.00004', '--train_image_size=%d' % SIZE,
        '--alsologtostderr')
    return train_dir, completed


def test_train_image_classifier_flag_line(trained, small_checkpoint):
    train_dir, completed = trained
    assert completed.returncode == 0, completed.stderr[-3000:]
    prefix = tf.train.latest_checkpoint(str(train_dir))
    assert prefix.endswith('model.ckpt-%d' % STEPS)
    assert 'step %d: loss' % STEPS in completed.stderr
    shapes = dict(tf.train.list_variables(prefix))
    # flowers has 5 classes (the dataset's count, not the 3 present here).
    assert shapes['MobilenetV1/Logits/Conv2d_1c_1x1/weights'] == [1, 1, 256, 5]
    # Restored from --checkpoint_path and frozen by --trainable_scopes.
    name = 'MobilenetV1/Conv2d_0/weights'
    np.testing.assert_array_equal(
        tf.train.load_variable(prefix, name),
        tf.train.load_variable(small_checkpoint, name))


def test_eval_image_classifier_flag_line(trained, flowers_dir, tmp_path):
    train_dir, _ = trained
    eval_dir = tmp_path / 'eval'
    completed = run_script(
        eval_image_classifier, '--alsologtostderr',
        '--checkpoint_path=%s' % train_dir, '--eval_dir=%s' % eval_dir,
        '--dataset_dir=%s' % flowers_dir, '--dataset_name=flowers',
        '--dataset_split_name=validation', '--model_name=mobilenet_v1_025',
        '--eval_image_size=%d' % SIZE, '--batch_size=2',
        '--max_num_batches=1')
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    assert lines[0].startswith('eval/Accuracy[') and \
        lines[1].startswith('eval/Recall_5[')
    assert 'images: 2,' in completed.stdout
    assert os.path.isfile(eval_dir / eval_image_classifier.RESULTS_FILE)
    events = [n for n in os.listdir(eval_dir) if 'tfevents' in n]
    tags = {value.tag: value.simple_value for event in
            tf.train.summary_iterator(str(eval_dir / events[0]))
            for value in event.summary.value}
    assert set(tags) == {'eval/Accuracy', 'eval/Recall_5'}
    assert abs(float(lines[0][len('eval/Accuracy['):-1]) -
               tags['eval/Accuracy']) < 1e-6  # a float32 summary
    assert abs(float(lines[1][len('eval/Recall_5['):-1]) -
               tags['eval/Recall_5']) < 1e-6


def test_export_inference_graph_flag_line(trained, tmp_path):
    """The unfrozen graph, restored from the trained checkpoint, computes
    what slimnets' frozen inference graph does."""
    train_dir, _ = trained
    output = tmp_path / 'mobilenet_v1_025_inf_graph.pb'
    completed = run_script(
        export_inference_graph, '--alsologtostderr',
        '--model_name=mobilenet_v1_025', '--image_size=%d' % SIZE,
        '--dataset_name=flowers', '--output_file=%s' % output)
    assert completed.returncode == 0, completed.stderr[-3000:]
    graph_def = tf.GraphDef.FromString(output.read_bytes())
    nodes = {node.name: node for node in graph_def.node}
    assert nodes['input'].op == 'Placeholder'
    assert [d.size for d in nodes['input'].attr['shape'].shape.dim] == [
        -1, SIZE, SIZE, 3]
    assert 'MobilenetV1/Predictions/Reshape_1' in nodes
    # Unfrozen: the weights are variables, restored from a checkpoint.
    assert nodes['MobilenetV1/Conv2d_0/weights'].op in _VARIABLE_OPS

    prefix = tf.train.latest_checkpoint(str(train_dir))
    images = np.random.RandomState(1).uniform(
        -1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    with tf.Graph().as_default() as graph, tf.Session() as sess:
        tf.import_graph_def(graph_def, name='')
        sess.run([tf.raw_ops.AssignVariableOp(
            resource=graph.get_tensor_by_name(node.name + ':0'),
            value=tf.train.load_variable(prefix, node.name))
                  for node in graph_def.node if node.op == 'VarHandleOp'])
        exported = sess.run('probabilities:0', {'input:0': images})
    frozen, _ = optimize.frozen_inference_graph(
        ModelSpec('mobilenet_v1_025', {}, SIZE, 5), prefix, fold=False,
        moving_average=False)
    model = runtimes.TensorFlowRuntime(frozen, rewrite=False)
    try:
        expected = model.run(images)
    finally:
        model.close()
    np.testing.assert_allclose(exported, expected, atol=1e-6)

    text = tmp_path / 'graph.pbtxt'
    completed = run_script(
        export_inference_graph, '--model_name=mobilenet_v1_025',
        '--image_size', SIZE, '--batch_size=1', '--write_text_graphdef',
        '--output_file', text)
    assert completed.returncode == 0, completed.stderr[-3000:]
    parsed = text_format.Parse(text.read_text(), tf.GraphDef())
    shape = {n.name: n for n in parsed.node}['input'].attr['shape'].shape
    assert [d.size for d in shape.dim] == [1, SIZE, SIZE, 3]
    # ImageNet's 1001 classes by default.
    assert {n.name: n for n in parsed.node}[
        'MobilenetV1/Logits/Conv2d_1c_1x1/weights'].attr[
            'shape'].shape.dim[3].size == 1001


@pytest.mark.parametrize('module, flags, fragments', [
    (train_image_classifier, ['--task=1'], ['--num_ps_tasks >= 1']),
    (train_image_classifier, ['--num_ps_tasks=2', '--worker_replicas=2'],
     ['--master', 'grpc://host:port']),
    (train_image_classifier, ['--sync_replicas'],
     ['--sync-replicas needs a cluster']),
    (train_image_classifier, ['--master=grpc://10.0.0.1:2222',
                              '--num_ps_tasks=1', '--worker_replicas=2',
                              '--task=2'], ['worker task index 2']),
    (train_image_classifier, ['--master=grpc://10.0.0.1:2222',
                              '--num_ps_tasks=1', '--worker_replicas=2',
                              '--sync_replicas', '--replicas_to_aggregate=3'],
     ['--replicas-to-aggregate 3 must be in 1..2']),
    (train_image_classifier, ['--ps_hosts=10.0.0.1:2222',
                              '--worker_hosts=10.0.0.2:2222',
                              '--job_name=worker', '--worker_replicas=2'],
     ['--worker_replicas=2 but the host lists name 1']),
    (train_image_classifier, ['--ps_hosts=10.0.0.1:2222',
                              '--worker_hosts=10.0.0.2:2222',
                              '--job_name=worker',
                              '--master=grpc://10.0.0.2:2222'],
     ['either --master']),
    (eval_image_classifier, ['--master=grpc://10.0.0.1:2222'],
     ['distributed evaluation', '--master=grpc://10.0.0.1:2222']),
    (train_image_classifier, ['--labels_offset=1'],
     ['--labels_offset=1 is not supported']),
    (train_image_classifier, ['--dataset_name=coco'],
     ["unknown --dataset_name 'coco'", 'flowers']),
    (export_inference_graph, ['--model_name=mobilenet_v1'],
     ['--output_file']),
    (train_image_classifier, ['--bogus_flag=1'], ['--bogus_flag']),
])
def test_refused_flags_are_one_line_errors(module, flags, fragments,
                                           one_line_error, tmp_path):
    completed = run_script(module, '--dataset_dir=%s' % tmp_path, *flags) \
        if module is not export_inference_graph else run_script(module, *flags)
    one_line_error(completed, *fragments, status=2)


def test_console_script_runs(tmp_path):
    """The installed `export_inference_graph` program (setup.cfg's
    console_scripts), as a shell script would call it."""
    program = os.path.join(os.path.dirname(sys.executable),
                           'export_inference_graph')
    if not os.path.exists(program):
        pytest.skip('console scripts not installed: pip install -e .')
    output = tmp_path / 'graph.pb'
    completed = subprocess.run(
        [program, '--model_name=mobilenet_v1_025', '--image_size=64',
         '--output_file=%s' % output, '--noquantize'],
        capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert 'input' in {n.name for n in tf.GraphDef.FromString(
        output.read_bytes()).node}


def test_absl_spellings_translate_onto_train(trained, tmp_path):
    """`--flag=value`, `--flag value`, `-flag=value`, `--noflag`,
    `--flag=false`, a checkpoint folder, and the reference's defaults."""
    train_dir, _ = trained
    parser = train_image_classifier.build_parser()
    args = parser.parse_args([
        '-train_dir=%s' % tmp_path, '--dataset_dir', str(tmp_path),
        '--checkpoint_path', str(train_dir), '--noclone_on_cpu',
        '--ignore_missing_vars', '--sync_replicas=false', '--num_clones=2',
        '--quantize_delay=5', '--optimizer', 'momentum',
        '--end_learning_rate', '-0.5',
        '--moving_average_decay=None'])
    options = train_image_classifier.translate(args)
    assert options['checkpoint'] == tf.train.latest_checkpoint(str(train_dir))
    assert options['train_dir'] == str(tmp_path)
    assert (options['clone_on_cpu'], options['ignore_missing_vars'],
            options['num_clones'], options['quantize_delay'],
            options['optimizer'], options['moving_average_decay'],
            options['end_learning_rate']) == (
                False, True, 2, 5, 'momentum', None, -0.5)
    defaults = train_image_classifier.translate(parser.parse_args([
        '--dataset_dir=%s' % tmp_path]))
    # research/slim's defaults (../shared/CONTRACT.md).
    assert (defaults['batch_size'], defaults['learning_rate'],
            defaults['optimizer'], defaults['weight_decay'],
            defaults['quantize_delay'], defaults['num_classes'],
            defaults['split'], defaults['model'], defaults['max_steps']) == (
                32, 0.01, 'rmsprop', 0.00004, None, 1001, 'train',
                'inception_v3', train_image_classifier.UNTIL_INTERRUPTED)
    with pytest.raises(SystemExit):  # absl takes no abbreviations
        parser.parse_args(['--learning=0.1'])


@pytest.mark.parametrize('flags, classes', [
    (['--dataset_name=cifar10'], 10), (['--dataset_name=mnist'], 10),
    (['--labels_offset=1'], 1000)])
def test_export_class_count_is_the_datasets(flags, classes, tmp_path):
    """research/slim's dataset_factory counts, less --labels_offset."""
    args = export_inference_graph.build_parser().parse_args(
        ['--model_name=mobilenet_v1_025', '--image_size=32',
         '--output_file=%s' % (tmp_path / 'g.pb')] + flags)
    nodes = {n.name: n for n in
             export_inference_graph.inference_graph_def(args).node}
    shape = nodes['MobilenetV1/Logits/Conv2d_1c_1x1/weights'].attr['shape']
    assert shape.shape.dim[3].size == classes


def test_export_quantize_rewrites_for_quantized_evaluation(tmp_path):
    """--quantize: tf.contrib.quantize.create_eval_graph's fake-quant ops."""
    args = export_inference_graph.build_parser().parse_args(
        ['--model_name=mobilenet_v1_025', '--image_size=32', '--quantize',
         '--output_file=%s' % (tmp_path / 'g.pb')])
    ops = [n.op for n in export_inference_graph.inference_graph_def(args).node]
    assert 'FakeQuantWithMinMaxVars' in ops
    args.quantize = False
    ops = [n.op for n in export_inference_graph.inference_graph_def(args).node]
    assert 'FakeQuantWithMinMaxVars' not in ops


@pytest.mark.parametrize('flag, training', [('--is_training', True),
                                            ('--is_training=false', False)])
def test_export_is_training_sets_batch_norm_mode(flag, training, tmp_path):
    args = export_inference_graph.build_parser().parse_args(
        ['--model_name=mobilenet_v1_025', '--image_size=32', flag,
         '--output_file=%s' % (tmp_path / 'g.pb')])
    modes = {n.attr['is_training'].b for n in
             export_inference_graph.inference_graph_def(args).node
             if n.op.startswith('FusedBatchNorm')}
    assert modes == {training}


def test_ignore_missing_vars(flowers_dir, tmp_path, one_line_error):
    """A checkpoint lacking a variable fails on one line, and trains with
    --ignore_missing_vars."""
    prefix = str(tmp_path / 'partial' / 'model.ckpt')
    with tf.Graph().as_default():
        nets_factory.get_network_fn('mobilenet_v1', 5)(
            tf.placeholder(tf.float32, [1, 32, 32, 3]), depth_multiplier=0.25)
        kept = [v for v in tf.global_variables()
                if not v.op.name.startswith('MobilenetV1/Conv2d_13_pointwise')]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver(kept).save(sess, prefix, write_meta_graph=False)
    line = ['--dataset_name=flowers', '--dataset_dir=%s' % flowers_dir,
            '--model_name=mobilenet_v1_025', '--checkpoint_path=%s' % prefix,
            '--max_number_of_steps=1', '--batch_size=2',
            '--train_image_size=32']
    failed = run_script(train_image_classifier,
                        '--train_dir=%s' % (tmp_path / 'a'), *line)
    one_line_error(failed, 'Conv2d_13_pointwise')
    completed = run_script(train_image_classifier, '--ignore_missing_vars',
                           '--train_dir=%s' % (tmp_path / 'b'), *line)
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_cluster_flags_translate_onto_a_cluster_role(tmp_path):
    parser = train_image_classifier.build_parser()
    options = train_image_classifier.translate(parser.parse_args([
        '--dataset_dir=%s' % tmp_path, '--master=grpc://10.0.0.2:2222',
        '--task=1', '--num_ps_tasks=2', '--worker_replicas=2',
        '--sync_replicas', '--replicas_to_aggregate=2']))
    role = options['cluster']
    assert (role.job_name, role.task_index, role.num_ps_tasks,
            role.num_workers, role.master, options['replicas_to_aggregate']) \
        == ('worker', 1, 2, 2, 'grpc://10.0.0.2:2222', 2)
    options = train_image_classifier.translate(parser.parse_args([
        '--dataset_dir=%s' % tmp_path, '--ps_hosts=10.0.0.1:2222',
        '--worker_hosts=10.0.0.2:2222,10.0.0.3:2222', '--job_name=worker',
        '--task_index=1', '--sync_replicas']))
    role = options['cluster']
    assert (role.task_index, role.master, role.spec()['worker'],
            options['replicas_to_aggregate']) == (
                1, '', ['10.0.0.2:2222', '10.0.0.3:2222'], 1)
    single = train_image_classifier.translate(parser.parse_args([
        '--dataset_dir=%s' % tmp_path]))
    assert (single['cluster'], single['replicas_to_aggregate']) == (None,
                                                                    None)


def test_master_flag_line_trains_on_servers_started_elsewhere(
        flowers_dir, small_checkpoint, tmp_path):
    """The reference's way: the servers run already (here in this
    process, 1 ps and 1 worker), the script's session runs on --master."""
    ps_port, worker_port = free_ports(2)
    spec = tf.train.ClusterSpec({'ps': ['127.0.0.1:%d' % ps_port],
                                 'worker': ['127.0.0.1:%d' % worker_port]})
    tf.train.Server(spec, job_name='ps', task_index=0)
    worker = tf.train.Server(spec, job_name='worker', task_index=0)
    train_dir = tmp_path / 'train'
    completed = run_script(
        train_image_classifier, '--master=%s' % worker.target, '--task=0',
        '--num_ps_tasks=1', '--worker_replicas=1', '--sync_replicas',
        '--replicas_to_aggregate=1',
        '--train_dir=%s' % train_dir, '--dataset_name=flowers',
        '--dataset_dir=%s' % flowers_dir, '--model_name=mobilenet_v1_025',
        '--checkpoint_path=%s' % small_checkpoint,
        '--checkpoint_exclude_scopes=MobilenetV1/Logits',
        '--trainable_scopes=MobilenetV1/Logits',
        '--max_number_of_steps=2', '--batch_size=2',
        '--train_image_size=%d' % SIZE)
    assert completed.returncode == 0, completed.stderr[-3000:]
    prefix = tf.train.latest_checkpoint(str(train_dir))
    assert prefix.endswith('model.ckpt-2')
    # The chief restored --checkpoint_path (a frozen layer keeps it).
    name = 'MobilenetV1/Conv2d_0/weights'
    np.testing.assert_array_equal(
        tf.train.load_variable(prefix, name),
        tf.train.load_variable(small_checkpoint, name))
    assert 'global_step' in dict(tf.train.list_variables(prefix))
