"""The configuration: the UCI grammar, the typed schema, and the presets of `masq setup`."""
