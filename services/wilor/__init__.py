"""The wilor service (work in progress)."""
