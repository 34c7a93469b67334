"""Model composition that knows no concrete architecture (see ``plugins/`` for those)."""
