"""The results store: a results root's layout, atomic writes, and reading back what it holds."""
