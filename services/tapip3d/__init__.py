"""The tapip3d service (work in progress)."""
