from tests.sync_world import sync_world  # noqa: F401  (fixture)
