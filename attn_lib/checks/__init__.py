"""Derivation checks, exported from the chapters: for each module, a plain transcription
of the paper's formulas and the checks that compare the module with it. The tests run
the same checks against deliberately broken modules to show that each check can fail."""
