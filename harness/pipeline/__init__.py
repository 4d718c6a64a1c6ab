"""The run pipeline: what ships inside a submission's counted ``train_gpt.py``.

`runner.run` reads top to bottom: setup -> train -> export -> score -> report, one phase
module each (`setup`, `training`, `export`, `scoring`, `report`). The scoring rules (BPB,
the sliding window, the byte count, the clocks) live here and nowhere else.

Two modules of this package never ship in a bundle: `checkpoint` (imported by name only
when a run checkpoints or resumes) and nothing else imports them statically.
"""
