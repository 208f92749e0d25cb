"""The daemon: the host that wires the components, its control socket, and the one-shot runner."""
