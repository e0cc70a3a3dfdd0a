"""The two Hypothesis profiles, loaded by conftest.py before any test module is imported.

`ci` draws the same examples on every run and keeps no example database, so a CI result
never depends on luck or on what an earlier run remembered. `dev` draws fresh examples on
every run and keeps failures in .hypothesis/, replaying them first until they are fixed.
The CI environment variable (CI runners set CI=true) selects `ci`; HYPOTHESIS_PROFILE, or
pytest's --hypothesis-profile, picks one by name. `ci` has the settings of the profile that
recent Hypothesis releases build in under that name; registering it here makes it hold with
every Hypothesis 6 that pyproject.toml allows.
"""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,  # a busy runner must not fail a test for being slow
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", derandomize=False)


def profile_for(environ: Mapping[str, str]) -> str:
    """The profile a test run uses when pytest's --hypothesis-profile does not name one."""
    if environ.get("HYPOTHESIS_PROFILE"):
        return environ["HYPOTHESIS_PROFILE"]
    return "ci" if environ.get("CI", "").strip().lower() not in ("", "0", "false") else "dev"
