"""One module per kind of recipient and route (school node, agencies, portal, offline bundle)."""
