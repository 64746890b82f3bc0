"""Handover: the concern store and the signed, encrypted transfer service."""

__version__ = "0.1.0"
