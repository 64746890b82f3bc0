"""Pydantic models of everything that crosses a boundary, and their exported JSON Schemas."""
