"""Built-in pgolf plugins/averaging: weight averaging (SWA, EMA) as run plugins."""
