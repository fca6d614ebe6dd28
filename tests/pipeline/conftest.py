"""Fixtures shared by the step tests."""

from tests.pipeline.test_steps import make_world  # noqa: F401  (fixture)
