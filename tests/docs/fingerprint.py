"""What the person at the other end of the telephone reads out, in a page's run.

``python tests/docs/fingerprint.py authority FILE`` prints the fingerprint of a
directory authority's public key; ``... entry FILE`` the fingerprint in an
organisation's entry file, ``... key-id FILE`` its signing key's id (see
``READ_ALOUD`` in ``test_documented_commands.py``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(kind: str, path: str) -> str:
    data = Path(path).read_bytes()
    if kind == "authority":
        from keys import minisign
        from transfer.directory.document import authority_fingerprint

        return authority_fingerprint(minisign.PublicKey.from_text(data))
    field = "key_id" if kind == "key-id" else "fingerprint"
    return str(json.loads(data)[field])


if __name__ == "__main__":
    print(main(sys.argv[1], sys.argv[2]))
