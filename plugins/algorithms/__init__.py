"""Built-in pgolf plugins/algorithms: plugins that change how the model trains or what it
exports (late QAT, pruning), kind ``algorithm``."""
