"""Built-in pgolf plugins."""
