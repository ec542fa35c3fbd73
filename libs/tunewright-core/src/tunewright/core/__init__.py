"""tunewright.core: the shared kernel of the tunewright services."""
