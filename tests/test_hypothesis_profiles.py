"""The Hypothesis profile a run gets: fixed examples under CI, fresh ones locally."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis_profiles import profile_for

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize(
    ("environ", "profile"),
    [
        ({}, "dev"),
        ({"CI": "true"}, "ci"),
        ({"CI": "1"}, "ci"),
        ({"CI": "false"}, "dev"),
        ({"CI": ""}, "dev"),
        ({"CI": "true", "HYPOTHESIS_PROFILE": "dev"}, "dev"),
        ({"HYPOTHESIS_PROFILE": "ci"}, "ci"),
    ],
)
def test_the_environment_picks_the_profile(environ, profile):
    assert profile_for(environ) == profile


def test_ci_draws_fixed_examples_and_remembers_nothing_and_dev_draws_fresh_ones():
    ci, dev = settings.get_profile("ci"), settings.get_profile("dev")
    assert ci.derandomize and ci.database is None and ci.deadline is None
    assert not dev.derandomize


def _profile_of_a_run(env: dict, *args: str) -> str:
    """The profile a real pytest run reports in its header (shown with -v)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "--co", *args, "tests/test_hypothesis_profiles.py"],
        cwd=ROOT,
        env={**env, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return next(line for line in result.stdout.splitlines() if "hypothesis profile" in line)


def test_a_ci_run_uses_the_ci_profile_and_the_command_line_can_override_it():
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")}
    assert "hypothesis profile 'ci'" in _profile_of_a_run({**env, "CI": "true"})
    overridden = _profile_of_a_run({**env, "CI": "true"}, "--hypothesis-profile=dev")
    assert "hypothesis profile 'dev'" in overridden
