"""Transfer packages: a signed manifest and its entries, in a tar stream, encrypted with age.

See ``docs/package-format.md``. Building: :mod:`transfer.package.build`;
opening and verifying: :mod:`transfer.package.open`; the hostile-input-safe
tar layer: :mod:`transfer.package.tar`; turning the store's records and
documents into entries: :mod:`transfer.package.from_store`.
"""
