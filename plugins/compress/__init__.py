"""Built-in pgolf plugins/compress."""
