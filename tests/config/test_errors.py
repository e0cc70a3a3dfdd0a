"""Every kind of problem in a config file: one line each, with file, line, key, what was
expected and what was found, and all of them reported together."""

from pathlib import Path

import pytest

from trainctl.config import ConfigError, ConfigIssue, load_config, parse_config
from trainctl.errors import TrainctlError

MODEL = "model: {layers: [flatten, {linear: {out: 10}}]}\n"


def issues(text: str, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml", overrides)
    lines = str(info.value).splitlines()
    assert lines == [str(issue) for issue in info.value.issues]
    return lines


def only_issue(text: str) -> str:
    (line,) = issues(text)
    return line


def test_config_error_is_a_trainctl_error_holding_structured_issues() -> None:
    with pytest.raises(TrainctlError) as info:
        parse_config("seed: -1\n" + MODEL, "c.yaml")
    assert info.value.issues == [
        ConfigIssue("c.yaml", 1, "seed", "expected an integer >= 0, found -1")
    ]


# ---------------------------------------------------------------- reading the file


def test_yaml_syntax_error_gives_file_line_and_stops() -> None:
    (line,) = issues("model:\n  layers: [flatten\nseed: x\nmode: nope\n")
    assert line.startswith("c.yaml:3: invalid YAML: while parsing a flow sequence")
    assert "expected ',' or ']'" in line


def test_tab_indentation_is_a_syntax_error_on_its_line() -> None:
    line = only_issue("seed: 1\nmodel:\n\tlayers: [flatten]\n")
    assert line.startswith("c.yaml:3: invalid YAML:") and "'\\t'" in line


def test_two_documents_are_refused() -> None:
    assert only_issue(MODEL + "---\nseed: 1\n").startswith("c.yaml:2: invalid YAML: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "c.yaml:1: expected a mapping of settings (model: ...), found an empty file"),
        (
            "# nothing\n\n",
            "c.yaml:1: expected a mapping of settings (model: ...), found an empty file",
        ),
        ("- flatten\n", "c.yaml:1: expected a mapping of settings at the top level, found a list"),
        ("\n\n42\n", "c.yaml:3: expected a mapping of settings at the top level, found 42"),
        ("null\n", "c.yaml:1: expected a mapping of settings at the top level, found null"),
    ],
)
def test_empty_file_or_a_top_level_that_is_not_a_mapping(text: str, expected: str) -> None:
    assert only_issue(text) == expected


def test_python_tags_are_refused_and_never_constructed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = (
        f"seed: !!python/object/apply:pathlib.Path.touch [{str(marker)!r}]\n"
        + MODEL
        + "name: !!python/name:os.system\n"
        + "data: !custom {dataset: digits}\n"
    )
    assert issues(text) == [
        "c.yaml:1: seed: expected plain YAML values, found the tag "
        "!!python/object/apply:pathlib.Path.touch (not allowed)",
        "c.yaml:3: name: expected plain YAML values, found the tag !!python/name:os.system "
        "(not allowed)",
        "c.yaml:4: data: expected plain YAML values, found the tag !custom (not allowed)",
    ]
    assert not marker.exists()


def test_duplicate_keys_are_errors_not_silently_the_last() -> None:
    text = "seed: 1\n" + MODEL + "optimizer:\n  name: sgd\n  lr: 0.1\n  lr: 0.2\nseed: 2\n"
    assert issues(text) == [
        "c.yaml:6: optimizer.lr: expected each key once, found it again (first on line 5); "
        "YAML would silently keep only the last",
        "c.yaml:7: seed: expected each key once, found it again (first on line 1); "
        "YAML would silently keep only the last",
    ]


def test_keys_that_yaml_reads_as_numbers_or_booleans() -> None:
    assert issues(MODEL + "1: a\nyes: b\n") == [
        "c.yaml:2: 1: expected a text key, found 1 (write it in quotes: '1')",
        "c.yaml:3: yes: expected a text key, found true (write it in quotes: 'yes')",
    ]


def test_an_alias_inside_itself_is_an_issue_not_a_hang() -> None:
    line = issues(MODEL + "metrics: &loop [*loop]\n")[0]
    assert (
        line
        == "c.yaml:2: metrics[0]: expected plain YAML values, found an alias that contains itself"
    )


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(MODEL.encode() + "name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:2: expected UTF-8 text, found the byte 0xe9"


def test_missing_file_and_a_directory(tmp_path: Path) -> None:
    for path, reason in (
        (tmp_path / "nope.yaml", "No such file or directory"),
        (tmp_path, "Is a directory"),
    ):
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(info.value) == f"{path}: cannot read the file: {reason}"


# ---------------------------------------------------------------- keys and names


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MODEL + "modell: {layers: [flatten]}\n",
            "c.yaml:2: modell: expected a top-level key (name, seed, mode, device, threads, "
            "dtype, data, model, loss, metrics, optimizer, schedule, train, debug, graph), "
            "found 'modell' (did you mean 'model'?)",
        ),
        (
            MODEL + "data:\n  batchsize: 3\n",
            "c.yaml:3: data.batchsize: expected a key of data (dataset, path, download, options, "
            "batch_size, eval_batch_size, val_split, test_split, shuffle, transforms, prefetch), "
            "found 'batchsize' (did you mean 'batch_size'?)",
        ),
        (
            MODEL + "train: {epoch: 3}\n",
            "c.yaml:2: train.epoch: expected a key of train (epochs, max_steps, log_every, "
            "eval_every, checkpoint_every, early_stopping, grad_clip, drop_last, best_metric), "
            "found 'epoch' (did you mean 'epochs'?)",
        ),
        (
            MODEL + "train: {early_stopping: {patiense: 3}}\n",
            "c.yaml:2: train.early_stopping.patiense: expected a key of early_stopping (metric, "
            "mode, patience, min_delta), found 'patiense' (did you mean 'patience'?)",
        ),
        (
            MODEL + "optimizer: {name: sgd, lr: 0.1, momentun: 0.9}\n",
            "c.yaml:2: optimizer.momentun: expected an argument of sgd (name, lr, momentum, "
            "nesterov, weight_decay, dampening), found 'momentun' (did you mean 'momentum'?)",
        ),
        (
            MODEL + "schedule: {name: cosine, warmup_step: 10}\n",
            "c.yaml:2: schedule.warmup_step: expected an argument of cosine (name, warmup_steps, "
            "warmup_start_factor, total_steps, min_lr), found 'warmup_step' (did you mean "
            "'warmup_steps'?)",
        ),
        (
            MODEL + "loss: {name: cross_entropy, label_smothing: 0.1}\n",
            "c.yaml:2: loss.label_smothing: expected an argument of cross_entropy (name, "
            "label_smoothing), found 'label_smothing' (did you mean 'label_smoothing'?)",
        ),
        (
            MODEL + "metrics: [{top_k_accuracy: {kk: 3}}]\n",
            "c.yaml:2: metrics[0].top_k_accuracy.kk: expected an argument of top_k_accuracy (k), "
            "found 'kk' (did you mean 'k'?)",
        ),
        (
            MODEL + "data: {dataset: spirals, options: {sample: 10}}\n",
            "c.yaml:2: data.options.sample: expected an argument of spirals (samples, classes, "
            "noise), found 'sample' (did you mean 'samples'?)",
        ),
        (
            MODEL + "data: {transforms: [{random_flip: {prob: 0.5}}]}\n",
            "c.yaml:2: data.transforms[0].random_flip.prob: expected an argument of random_flip "
            "(p), found 'prob'",
        ),
        (
            "model:\n  layers:\n    - linear: {out: 3, bais: false}\n",
            "c.yaml:3: model.layers[0].linear.bais: expected an argument of linear (out, bias, "
            "init), found 'bais' (did you mean 'bias'?)",
        ),
        (
            "model:\n  layers:\n    - relu: {inplace: true}\n",
            "c.yaml:3: model.layers[0].relu.inplace: expected no arguments (relu has none), found "
            "'inplace'",
        ),
    ],
)
def test_unknown_keys_at_every_level_with_did_you_mean(text: str, expected: str) -> None:
    assert only_issue(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "model:\n  layers:\n    - flatten\n    - lineer: {out: 3}\n",
            "c.yaml:4: model.layers[1]: expected a layer type (linear, conv2d, max_pool2d, "
            "avg_pool2d, global_avg_pool, flatten, dropout, batch_norm, layer_norm, embedding, "
            "relu, leaky_relu, gelu, tanh, sigmoid, silu, softplus, elu, softmax, residual), found "
            "'lineer' "
            "(did you mean 'linear'?)",
        ),
        (
            MODEL + "optimizer: adamm\n",
            "c.yaml:2: optimizer: expected an optimizer (sgd, adam, adamw, rmsprop), found "
            "'adamm' (did you mean 'adam'?)",
        ),
        (
            MODEL + "optimizer: {name: rmsprob, lr: 0.1}\n",
            "c.yaml:2: optimizer.name: expected an optimizer (sgd, adam, adamw, rmsprop), found "
            "'rmsprob' (did you mean 'rmsprop'?)",
        ),
        (
            MODEL + "schedule: {name: cosin}\n",
            "c.yaml:2: schedule.name: expected a schedule (constant, step, multistep, "
            "exponential, cosine), found 'cosin' (did you mean 'cosine'?)",
        ),
        (
            MODEL + "data: {dataset: spiral}\n",
            "c.yaml:2: data.dataset: expected a data set (digits, regression, spirals, blobs, "
            "images, mnist, fashion_mnist, cifar10, npz, csv, image_folder), found 'spiral' "
            "(did you mean 'spirals'?)",
        ),
        (
            MODEL + "data:\n  transforms:\n    - normalise: {mean: 0, std: 1}\n",
            "c.yaml:4: data.transforms[0]: expected a transform (normalize, random_flip, "
            "random_crop, one_hot), found 'normalise' (did you mean 'normalize'?)",
        ),
        (
            MODEL + "metrics: [acuracy]\n",
            "c.yaml:2: metrics[0]: expected a metric (accuracy, top_k_accuracy, mse, mae, r2), "
            "found 'acuracy' (did you mean 'accuracy'?)",
        ),
        (
            MODEL + "loss: crossentropy\n",
            "c.yaml:2: loss: expected a loss (cross_entropy, mse, bce_with_logits), found "
            "'crossentropy' (did you mean 'cross_entropy'?)",
        ),
        (
            MODEL + "mode: grpah\n",
            "c.yaml:2: mode: expected one of eager, graph, found 'grpah' (did you mean 'graph'?)",
        ),
        (
            MODEL + "device: gpu\n",
            "c.yaml:2: device: expected one of cpu, cuda, auto, found 'gpu' (did you mean 'cpu'?)",
        ),
    ],
)
def test_unknown_names_with_did_you_mean(text: str, expected: str) -> None:
    assert only_issue(text) == expected


# ---------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seed: 1.5", "seed: expected an integer >= 0, found 1.5"),
        (
            "dtype: float16",
            "dtype: expected one of float32, float64, mixed_float16, mixed_bfloat16, found "
            "'float16' (did you mean 'float64'?)",
        ),
        (
            "name: my run",
            "name: expected a run name of letters, digits, '.', '_' and '-', found 'my run'",
        ),
        ("data: {batch_size: 0}", "data.batch_size: expected an integer >= 1, found 0"),
        ("data: {val_split: 1}", "data.val_split: expected a number in [0, 1), found 1"),
        ("data: {shuffle: maybe}", "data.shuffle: expected true or false, found 'maybe'"),
        ("data: {prefetch: -1}", "data.prefetch: expected an integer >= 0, found -1"),
        (
            "data: {options: 3}",
            "data.options: expected a mapping of the options of digits, found 3",
        ),
        ("data: [digits]", "data: expected a mapping, found ['digits']"),
        ("train: {epochs: 0}", "train.epochs: expected an integer >= 1 or null, found 0"),
        ("train: {grad_clip: 0}", "train.grad_clip: expected a number > 0 or null, found 0"),
        ("train: {early_stopping: 3}", "train.early_stopping: expected a mapping, found 3"),
        ("optimizer: {lr: 0}", "optimizer.lr: expected a number > 0, found 0"),
        (
            "optimizer: {lr: 0.1, momentum: 1.0}",
            "optimizer.momentum: expected a number in [0, 1), found 1.0",
        ),
        (
            "optimizer: [sgd]",
            "optimizer: expected an optimizer name, or a mapping of name: and arguments, found "
            "['sgd']",
        ),
        (
            "schedule: {name: step, step_size: ten}",
            "schedule.step_size: expected an integer >= 1, found 'ten'",
        ),
        (
            "schedule: {warmup_start_factor: 2}",
            "schedule.warmup_start_factor: expected a number in [0, 1], found 2",
        ),
        (
            "loss: {name: cross_entropy, label_smoothing: 1.5}",
            "loss.label_smoothing: expected a number in [0, 1], found 1.5",
        ),
        ("metrics: accuracy", "metrics: expected a list of metrics, found 'accuracy'"),
        (
            "metrics: [{top_k_accuracy: {k: 0}}]",
            "metrics[0].top_k_accuracy.k: expected an integer >= 1, found 0",
        ),
        (
            "data: {transforms: [{normalize: {mean: [0.5, x], std: 1}}]}",
            "data.transforms[0].normalize.mean: expected a non-empty list of numbers, found [0.5, "
            "'x']",
        ),
    ],
)
def test_values_of_the_wrong_type_or_out_of_range(text: str, expected: str) -> None:
    assert only_issue(MODEL + text + "\n") == "c.yaml:2: " + expected


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (
            "[{dropout: {p: 1.0}}]",
            "model.layers[0].dropout.p: expected a number in [0, 1), found 1.0",
        ),
        (
            "[{linear: {out: ten}}]",
            "model.layers[0].linear.out: expected an integer >= 1, found 'ten'",
        ),
        (
            "[linear]",
            "model.layers[0].linear.out: expected an integer >= 1 (required), found nothing",
        ),
        (
            "[{linear: null}]",
            "model.layers[0].linear.out: expected an integer >= 1 (required), found nothing",
        ),
        (
            "[{relu: 3}]",
            "model.layers[0].relu: expected a mapping of the arguments of relu, found 3",
        ),
        ("[5]", "model.layers[0]: expected a layer type: a name or name: {arguments}, found 5"),
        (
            "[{}]",
            "model.layers[0]: expected a layer type: a name or name: {arguments}, found an empty "
            "mapping",
        ),
        (
            "[{linear: {out: 3}, relu: null}]",
            "model.layers[0]: expected one layer type per list item (- name: {arguments}), found "
            "a mapping with the keys linear, relu",
        ),
        ("[]", "model.layers: expected a non-empty list of layers, found an empty list"),
        ("flatten", "model.layers: expected a non-empty list of layers, found 'flatten'"),
        (
            "[{residual: []}]",
            "model.layers[0].residual: expected a non-empty list of layers, found an empty list",
        ),
        (
            "[residual]",
            "model.layers[0].residual: expected the layers of the residual block: a list, or "
            "layers: [...], found nothing",
        ),
        (
            "[{residual: {layers: [relu], gate: 1}}]",
            "model.layers[0].residual.gate: expected an argument of residual (layers), found "
            "'gate'",
        ),
        (
            "[{residual: [{residual: [{linear: {}}]}]}]",
            "model.layers[0].residual[0].residual[0].linear.out: expected an integer >= 1 "
            "(required), found nothing",
        ),
    ],
)
def test_layer_problems_name_the_layer_by_position(layers: str, expected: str) -> None:
    assert only_issue(f"model:\n  layers: {layers}\n") == "c.yaml:2: " + expected


def test_arguments_written_beside_a_layer_instead_of_under_it() -> None:
    text = "model:\n  layers:\n    - flatten\n    - linear:\n      out: 10\n"
    assert only_issue(text) == (
        "c.yaml:4: model.layers[1]: expected the arguments of linear indented under it, "
        "found them beside it"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "seed: 1\n",
            "c.yaml:1: model: expected a mapping with layers: [...] (required), found nothing",
        ),
        (
            "model: {}\n",
            "c.yaml:1: model.layers: expected a non-empty list of layers, found nothing",
        ),
        (
            MODEL + "schedule: {name: step}\n",
            "c.yaml:2: schedule.step_size: expected an integer >= 1 (required), found nothing",
        ),
        (
            MODEL + "optimizer: {momentum: 0.9}\n",
            "c.yaml:2: optimizer.lr: expected a number > 0 (required), found nothing",
        ),
        (
            MODEL + "data: {transforms: [{normalize: {mean: 0.5}}]}\n",
            "c.yaml:2: data.transforms[0].normalize.std: expected a number or a list of numbers > "
            "0 (required), found nothing",
        ),
    ],
)
def test_missing_required_values(text: str, expected: str) -> None:
    assert only_issue(text) == expected


# ---------------------------------------------------------------- settings that must agree


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "train: {epochs: null}",
            "train.epochs: expected epochs or max_steps to be set (the run needs an end), found "
            "both null",
        ),
        (
            "train: {best_metric: accuraccy}",
            "train.best_metric: expected loss or a configured metric (loss, accuracy), found "
            "'accuraccy' (did you mean 'accuracy'?)",
        ),
        (
            "metrics: [mse]\ntrain: {best_metric: accuracy}",
            "train.best_metric: expected loss or a configured metric (loss, mse), found 'accuracy'",
        ),
        (
            "metrics: [top_k_accuracy]\ntrain: {early_stopping: {metric: top_k_accuracy}}",
            "train.early_stopping.metric: expected loss or a configured metric (loss, "
            "top_5_accuracy), found 'top_k_accuracy' (did you mean 'top_5_accuracy'?)",
        ),
        (
            "metrics: [accuracy, {top_k_accuracy: {k: 1}}, accuracy]",
            "metrics[2]: expected each metric once, found 'accuracy' again",
        ),
        (
            "data: {dataset: digits, download: true}",
            "data.download: expected false (data set digits cannot be downloaded; mnist, "
            "fashion_mnist, cifar10 can), found true",
        ),
        (
            "data: {dataset: npz, path: null}",
            "data.path: expected the path of data set npz's files, found nothing",
        ),
        (
            "data: {dataset: spirals, path: data/spirals}",
            "data.path: expected no path (data set spirals reads no files), found 'data/spirals'",
        ),
        (
            "data: {val_split: 0.5, test_split: 0.5}",
            "data.val_split: expected val_split + test_split < 1 (some data must be left to train "
            "on), found 0.5 + 0.5",
        ),
        (
            "optimizer: {name: sgd, lr: 0.1, nesterov: true}",
            "optimizer.nesterov: expected false unless momentum > 0 and dampening = 0, found true",
        ),
        (
            "optimizer: {name: adam, betas: [0.9]}",
            "optimizer.betas: expected a pair [beta1, beta2] of numbers in [0, 1), found [0.9]",
        ),
        (
            "optimizer: {name: adam, betas: [0.9, 1.0]}",
            "optimizer.betas: expected a non-empty list of numbers in [0, 1), found [0.9, 1.0]",
        ),
        (
            "schedule: {name: multistep, milestones: [30, 10]}",
            "schedule.milestones: expected a strictly increasing list of integers >= 1, found "
            "[30, 10]",
        ),
        (
            "optimizer: {lr: 0.01}\nschedule: {name: cosine, min_lr: 0.1}",
            "schedule.min_lr: expected a number in [0, 0.01] (at most the optimizer's lr), found "
            "0.1",
        ),
    ],
)
def test_cross_field_checks(text: str, expected: str) -> None:
    line = only_issue(MODEL + text + "\n")
    assert line.split(": ", 1)[1] == expected


def test_cosine_with_its_own_total_steps_may_outlast_max_steps() -> None:
    text = (
        MODEL
        + "schedule: {name: cosine, total_steps: 500, warmup_steps: 100}\ntrain: {max_steps: 50}\n"
    )
    assert parse_config(text).schedule.args["total_steps"] == 500


# ---------------------------------------------------------------- all at once


def test_every_issue_in_a_file_is_reported_together_in_line_order() -> None:
    text = """\
name: demo
mode: grpah
data:
  dataset: spirals
  batch_size: 0
model:
  layers:
    - flatten
    - lineer: {out: 3}
    - linear: {out: 3, bais: true}
optimizer: {name: sgd, lr: abc, momentum: 1.5}
train:
  epochs: 0
  best_metric: acuracy
"""
    assert issues(text) == [
        "c.yaml:2: mode: expected one of eager, graph, found 'grpah' (did you mean 'graph'?)",
        "c.yaml:5: data.batch_size: expected an integer >= 1, found 0",
        "c.yaml:9: model.layers[1]: expected a layer type (linear, conv2d, max_pool2d, "
        "avg_pool2d, global_avg_pool, flatten, dropout, batch_norm, layer_norm, embedding, "
        "relu, leaky_relu, gelu, tanh, sigmoid, silu, softplus, elu, softmax, residual), found "
        "'lineer' "
        "(did you mean 'linear'?)",
        "c.yaml:10: model.layers[2].linear.bais: expected an argument of linear (out, bias, "
        "init), found 'bais' (did you mean 'bias'?)",
        "c.yaml:11: optimizer.lr: expected a number > 0, found 'abc'",
        "c.yaml:11: optimizer.momentum: expected a number in [0, 1), found 1.5",
        "c.yaml:13: train.epochs: expected an integer >= 1 or null, found 0",
        "c.yaml:14: train.best_metric: expected loss or a configured metric (loss, accuracy), "
        "found 'acuracy' (did you mean 'accuracy'?)",
    ]
