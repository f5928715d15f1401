"""Importing this package registers every model builder."""
from . import baselines, repvgg, repvggplus, ssd, vgg  # noqa: F401
