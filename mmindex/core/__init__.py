"""Policies every layer shares: paths, precision, devices, atomic writes, progress, plots,
table files, fault points. Imports nothing of mmindex but errors."""
