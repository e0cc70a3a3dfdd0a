"""Hostile config files through `trainctl validate`: exit 0 or 2, never anything else.

Thousands of seeded cases per run (hypothesis, derandomized, no example database): on exit 2
every line of the message is `file:LINE: ...`; there is never a traceback; nothing is written
in the (otherwise empty) working folder; no Python object is built from a YAML tag.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from data_files import write_cifar
from hostile_files import HOSTILE_NPZ
from hostile_helpers import (
    MARKER,
    ROOT,
    TALLY,
    assert_located_config_errors,
    error_lines,
    invoke,
    snapshot,
)
from hostile_yaml import (
    TAGS,
    alias_bomb,
    bomb_text,
    garbage_bytes,
    hostile_config_bytes,
    hostile_override,
    mutated_config,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder: relative paths a config might write to land here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def validate_bytes(workdir: Path, data: bytes):
    """`trainctl validate config.yaml` on `data`; checks what must hold whatever the input."""
    path = workdir / "config.yaml"
    path.write_bytes(data)
    before = snapshot(workdir)
    result = invoke("validate", "config.yaml")
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 2:
        assert_located_config_errors(result, "config.yaml")
    else:
        assert result.stdout.startswith("config.yaml is valid: "), result.output
    assert snapshot(workdir) == before, "validate wrote a file"
    assert not (workdir / MARKER).exists(), "a YAML tag ran code"
    return result


@settings(FUZZ, max_examples=800)
@given(text=mutated_config())
def test_mutated_example_configs(workdir, text):
    TALLY["fuzzed configs"] += 1
    validate_bytes(workdir, text.encode("utf-8"))


@settings(FUZZ, max_examples=1000)
@given(data=hostile_config_bytes())
def test_damaged_config_text(workdir, data):
    TALLY["fuzzed configs"] += 1
    validate_bytes(workdir, data)


@settings(FUZZ, max_examples=700)
@given(data=garbage_bytes)
def test_arbitrary_bytes(workdir, data):
    TALLY["fuzzed configs"] += 1
    validate_bytes(workdir, data)


@settings(FUZZ, max_examples=200)
@given(overrides=st.lists(hostile_override(), min_size=1, max_size=3))
def test_hostile_overrides(workdir, overrides):
    """`--set` values are YAML too: the same bounds, and each message names its override."""
    TALLY["fuzzed configs"] += 1
    config = ROOT / "configs" / "digits_mlp.yaml"
    before = snapshot(workdir)
    result = invoke("validate", config, *(arg for o in overrides for arg in ("--set", o)))
    assert result.exit_code in (0, 2), (result.output, result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        for line in error_lines(result):
            assert line.startswith("--set ") or line.startswith(f"{config}:"), line
    assert snapshot(workdir) == before
    assert not (workdir / MARKER).exists()


@settings(FUZZ, max_examples=120)
@given(bomb=alias_bomb())
def test_alias_bombs_are_refused_quickly(workdir, bomb):
    TALLY["fuzzed configs"] += 1
    text, expanded = bomb
    started = time.perf_counter()
    result = validate_bytes(workdir, text.encode())
    # A hang guard, not a speed target: an unguarded bomb expands for minutes or exhausts
    # memory; 30 s leaves a loaded CI machine a wide margin (it takes milliseconds).
    assert time.perf_counter() - started < 30
    if expanded > 100_000:
        assert result.exit_code == 2
        assert "alias" in result.stderr, result.stderr


@pytest.mark.parametrize("tag", TAGS)
def test_every_tag_is_refused_and_never_constructed(workdir, tag):
    TALLY["fuzzed configs"] += 1
    text = f"model:\n  layers: [flatten, {{linear: {{out: 10}}}}]\nseed: {tag}\n"
    result = validate_bytes(workdir, text.encode())
    assert result.exit_code == 2
    assert "config.yaml:3: seed: " in result.stderr


# ---------------------------------------------------------------- a real process


SUBPROCESS_CASES = {
    "billion_laughs": bomb_text(9, 9, "list").encode(),
    "merge_bomb": bomb_text(9, 9, "merge_keys").encode(),
    "os_system_tag": f"model: !!python/object/apply:os.system ['touch {MARKER}']\n".encode(),
    "deep_nesting": b"model: " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "nul_byte": b"name: a\x00b\n",
    "latin1": "name: caf\xe9\n".encode("latin-1"),
    "empty": b"",
    "utf16": "model: {}\n".encode("utf-16"),
}


@pytest.mark.parametrize("case", sorted(SUBPROCESS_CASES))
def test_real_process_exits_2_within_bounded_time_and_memory(tmp_path, case):
    """The installed command, with 1 GiB of address space and 30 s: a bomb cannot hang it."""
    TALLY["fuzzed configs"] += 1
    (tmp_path / "config.yaml").write_bytes(SUBPROCESS_CASES[case])
    before = snapshot(tmp_path)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))

    proc = subprocess.run(
        [sys.executable, "-m", "trainctl", "validate", "config.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=limit,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith("config.yaml:") for line in lines), proc.stderr
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- valid, but not buildable


def _write_data_files(folder: Path) -> None:
    """An npz of pickled objects, a csv of binary bytes, CIFAR batches with a truncated one."""
    folder.mkdir()
    (folder / "pickled.npz").write_bytes(HOSTILE_NPZ["pickled_object_array"]())
    (folder / "binary.csv").write_bytes(bytes(range(256)))
    write_cifar(folder / "cifar", per_batch=1, test_size=1)
    (folder / "cifar" / "data_batch_2.bin").write_bytes(b"\x01" * 100)


BUILD_HOSTILE = [
    ("digits_mlp", ["model.layers[5].linear.out=7"], "config"),
    ("spirals", ["model.layers[0]={conv2d: {out: 4, kernel: 3}}"], "config"),
    ("digits_mlp", ["model.layers[0]={max_pool2d: {kernel: 16}}"], "config"),
    ("digits_cnn", ["model.layers[0].conv2d.kernel=30"], "config"),
    ("linear_regression", ["loss=cross_entropy"], "config"),
    ("spirals", ["data.options.classes=50"], "config"),
    ("spirals", ["data.options.samples=1000000000000"], "spirals: 1,000,000,000,000 samples"),
    ("digits_mlp", ["model.layers[1].linear.out=100000000000"], "config"),
    ("digits_mlp", ["data.dataset=mnist", "data.path=nowhere"], "nowhere"),
    ("digits_mlp", ["data.dataset=npz", "data.path=DATA/pickled.npz"], "DATA/pickled.npz"),
    ("digits_mlp", ["data.dataset=csv", "data.path=DATA/binary.csv"], "DATA/binary.csv"),
    ("digits_mlp", ["data.dataset=cifar10", "data.path=DATA/cifar"], "DATA/cifar"),
]
HARMLESS = [
    "optimizer.lr=0.5",
    "seed=7",
    "data.batch_size=3",
    "mode=graph",
    "train.epochs=1",
    "data.shuffle=false",
    "train.max_steps=2",
]


@pytest.mark.parametrize("case", BUILD_HOSTILE, ids=lambda case: " ".join(case[1]))
@settings(FUZZ, max_examples=4)
@given(extra=st.lists(st.sampled_from(HARMLESS), max_size=3, unique=True))
def test_a_config_that_validates_but_cannot_be_built_leaves_nothing(workdir, case, extra):
    """`train` exits 2 with the config's file and line, or the data file, and makes no run
    folder: the model and data are built before the folder is created."""
    TALLY["fuzzed configs through train"] += 1
    data = workdir / "data"
    if not data.exists():
        _write_data_files(data)
    config_name, overrides, named = case
    config = ROOT / "configs" / f"{config_name}.yaml"
    sets = [arg for o in [*extra, *overrides] for arg in ("--set", o.replace("DATA", str(data)))]
    assert invoke("validate", config, *sets).exit_code == 0  # hostile only when built
    before = snapshot(workdir)
    result = invoke("train", config, *sets, "--runs-root", "runs", "-q")
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    where = str(config) if named == "config" else named.replace("DATA", str(data))
    lines = error_lines(result)
    assert lines and all(where in line or line.startswith("--set") for line in lines), lines
    assert snapshot(workdir) == before
    assert not (workdir / MARKER).exists()


# ---------------------------------------------------------------- the bounds, one by one


def _chain(link: str, length: int) -> str:
    """`length` anchors, each defined through the one before it."""
    lines = ["l0: &l0 {a: 1}"] + [link.format(i=i, j=i - 1) for i in range(1, length)]
    return "model: {layers: [flatten, {linear: {out: 10}}]}\n" + "\n".join(lines) + "\n"


STRUCTURES = {
    "flow_nesting": (
        "seed: " + "[" * 1000 + "]" * 1000 + "\n",
        "config.yaml:1: invalid YAML: expected at most 100 levels of nested mappings and lists",
    ),
    "block_nesting": (
        "".join("  " * i + f"k{i}:\n" for i in range(150)) + "  " * 150 + "leaf: 1\n",
        "config.yaml:100: invalid YAML: expected at most 100 levels of nested mappings and lists",
    ),
    "alias_chain": (
        _chain("l{i}: &l{i} [*l{j}]", 400),
        "config.yaml:101: l99: expected at most 100 levels of nested values, found more "
        "(through aliases)",
    ),
    "merge_chain": (
        _chain("l{i}: &l{i} {{<<: *l{j}, k{i}: 1}}", 400),
        "config.yaml:103: l101: expected aliases (*name) and merge keys (<<) to repeat at most "
        "10,000 values in all",
    ),
    "self_merge": (
        "a: &a {<<: *a}\n",
        "config.yaml:1: a: expected a merge (<<) of other mappings, found one that merges itself",
    ),
    "self_alias": (
        "a: &a [*a]\n",
        "config.yaml:1: a[0]: expected plain YAML values, found an alias that contains itself",
    ),
    "billion_laughs": (
        bomb_text(10, 9, "list"),
        "config.yaml:7: l4: expected aliases (*name) and merge keys (<<) to repeat at most",
    ),
    "merge_bomb": (
        bomb_text(10, 9, "merge_keys"),
        "config.yaml:8: l5: expected aliases (*name) and merge keys (<<) to repeat at most",
    ),
}


@pytest.mark.parametrize("case", sorted(STRUCTURES))
def test_documents_that_would_exhaust_the_stack_or_memory(workdir, case):
    """Each stops at its bound, at once, with the line where it goes too far."""
    text, expected = STRUCTURES[case]
    TALLY["fuzzed configs"] += 1
    started = time.perf_counter()
    result = validate_bytes(workdir, text.encode())
    assert time.perf_counter() - started < 1
    assert result.exit_code == 2
    assert any(line.startswith(expected) for line in error_lines(result)), result.stderr


def test_a_plain_anchor_and_merge_still_load(workdir):
    text = (
        "base: &wide {out: 8}\n"
        "model:\n  layers:\n    - flatten\n    - linear: {<<: *wide, out: 16}\n"
        "    - linear: *wide\n    - linear: {out: 10}\n"
    )
    result = validate_bytes(workdir, text.encode())
    assert result.exit_code == 2  # `base` is not a top-level key; nothing else is wrong
    assert error_lines(result) == [
        "config.yaml:1: base: expected a top-level key (name, seed, mode, device, threads, "
        "dtype, data, model, loss, metrics, optimizer, schedule, train, debug, graph, "
        "distributed), found 'base'"
    ]


ODD_TEXT = {
    "key_with_a_line_break": ('"a\\nb": 1\n', "config.yaml:1: ['a\\nb']: expected a top-level key"),
    "key_with_an_escape_sequence": ('"\\e[31mred": 1\n', "['\\x1b[31mred']"),
    "value_mapping_with_a_line_break_key": (
        'name: {"\\N": 1}\n',
        "config.yaml:1: name: expected a run name of letters, digits, '.', '_' and '-', "
        "found {'\\x85': 1}",
    ),
    "nul_character": ("name: a\x00\n", "config.yaml:1: invalid YAML: the character U+0000 is"),
    "bel_character": ("name: a\x07\n", "config.yaml:1: invalid YAML: the character U+0007 is"),
    "bad_boolean": ("data: {shuffle: !!bool maybe}\n", "expected a value of type !!bool, found"),
    "bad_timestamp": ("seed: !!timestamp 2020-99-99\n", "(month must be in 1..12)"),
}


@pytest.mark.parametrize("case", sorted(ODD_TEXT))
def test_odd_characters_stay_escaped_on_one_line(workdir, case):
    """Keys and values are quoted in messages: a line break cannot split one, and an escape
    sequence cannot reach the terminal."""
    text, expected = ODD_TEXT[case]
    result = validate_bytes(workdir, ("model: {layers: [relu]}\n" + text).encode())
    assert result.exit_code == 2
    assert "\x1b" not in result.stderr and "\x85" not in result.stderr
    assert any(
        expected.replace("config.yaml:1:", "config.yaml:2:") in line for line in error_lines(result)
    ), result.stderr


def test_an_override_with_a_line_break_is_named_quoted(workdir):
    config = ROOT / "configs" / "digits_mlp.yaml"
    result = invoke("validate", config, "--set", "optimizer.lr=[\n", "--set", "seed=-1")
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 2 and lines[0].startswith("--set 'optimizer.lr=[\\n': optimizer.lr: ")
    assert lines[1].startswith("--set seed=-1: seed: expected an integer >= 0")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/dev/zero", "expected a config of at most 1,048,576 bytes, found a larger file"),
        (".", "cannot read the file: Is a directory"),
        ("missing.yaml", "cannot read the file: No such file or directory"),
        ("a\x00b.yaml", "cannot read the file: embedded null byte"),
    ],
)
def test_files_that_are_not_config_files(workdir, path, message):
    if path == "/dev/zero" and not Path(path).exists():
        pytest.skip("no /dev/zero here")
    before = snapshot(workdir)
    TALLY["fuzzed configs"] += 1
    result = invoke("validate", path)
    assert result.exit_code == 2
    assert error_lines(result) == [f"{path!r}"[1:-1] + f": {message}"]
    assert snapshot(workdir) == before


def test_a_default_run_name_from_a_long_file_name_is_cut_to_fit(workdir):
    path = workdir / ("x" * 250 + ".yaml")
    path.write_text("model: {layers: [flatten, {linear: {out: 10}}]}\n")
    result = invoke("config", path)
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["name"] == "x" * 200
