"""Foundations every room may use: the one error type, the config validator, credential masking, devices."""
