"""The biomedclip service (work in progress)."""
