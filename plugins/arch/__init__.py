"""Built-in pgolf plugins/arch."""
