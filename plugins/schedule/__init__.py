"""Built-in pgolf plugins/schedule."""
