"""Measurements: retrieval recall and VQA accuracy, on labelled data."""
