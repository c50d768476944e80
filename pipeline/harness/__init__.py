"""Proof harnesses: the end-to-end bench, the chaos run, the service fleet they drive, the truth check."""
