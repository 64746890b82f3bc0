"""Reports for the school's governors and for a child-protection conference or court.

:mod:`transfer.reports.figures` (pure) holds the figures, the periods and the rules of
what may be shown to whom; :mod:`transfer.reports.service` counts them in the store,
permission-checked; :mod:`transfer.reports.printing` lays them out as PDF.
"""
