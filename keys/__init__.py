"""Key generation, sealing at rest, fingerprints, rotation, revocation, import and export."""
