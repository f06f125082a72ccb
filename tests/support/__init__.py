"""Helpers shared by the tests: the tiny model, SAE factories, CLI runners."""
