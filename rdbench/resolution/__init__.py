"""Resolution: from a suite\x27s merged run config to explicit, checked components, nothing built."""
