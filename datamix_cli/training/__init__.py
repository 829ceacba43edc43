"""Mixing-aware fine-tuning: the mixed forward, the loop, the adversary, evaluation, devices and torchrun."""
