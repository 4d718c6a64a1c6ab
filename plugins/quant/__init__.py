"""Built-in pgolf plugins/quant."""
