"""Encoders: the registry that turns a model spec string into an Encoder."""
