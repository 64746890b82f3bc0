"""Data shipped with Handover: bank holidays and a default term calendar (JSON)."""
