"""Built-in pgolf plugins/activation: MLP nonlinearities for a host model (kind ``activation``)."""
