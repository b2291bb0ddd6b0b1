"""An example rdbench plugin (see docs/plugins.md in rdbench)."""
