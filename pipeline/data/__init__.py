"""Synthetic Chicago taxi trips learned from the real sample (`taxifare data synth`)."""
