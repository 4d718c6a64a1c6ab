"""Built-in pgolf plugins/adapt: eval-time adapters (score-first test-time training)."""
