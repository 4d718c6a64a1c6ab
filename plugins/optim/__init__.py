"""Built-in pgolf plugins/optim."""
