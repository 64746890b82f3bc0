"""Step-up: a fresh authenticator code asked on the page that confirms a sensitive action.

A page that confirms (send a file, export, create an API token) includes
``{% include "_step_up.html" %}`` in its form and, on POST, calls :func:`check_code`
before doing anything: the code is checked by :meth:`Accounts.step_up` (accepted
once, counted towards the lock-out like a sign-in). A wrong code comes back as a
message for the ``code`` field; a slow-down or a lock-out in plain words.
"""

from __future__ import annotations

from typing import Final

from transfer.auth.service import AccountLocked, SlowDown, WrongCode
from transfer.errors import ConflictError
from transfer.web.core import FormErrors, Visit, WebApp

CODE_FIELD: Final = "code"


async def check_code(app: WebApp, visit: Visit, code: str, errors: FormErrors) -> bool:
    """True when ``code`` is a fresh, right code; otherwise a message goes into ``errors``."""
    code = code.strip()
    if not code:
        errors.add(CODE_FIELD, "Enter the 6-digit code from your authenticator app")
        return False
    try:
        await app.accounts.step_up(visit.principal, code)
    except WrongCode:
        errors.add(
            CODE_FIELD,
            "That code is not right, or it has been used already. Wait for "
            "the next code in your authenticator app and enter it.",
        )
        return False
    except SlowDown as err:
        wait = "1 second" if err.retry_after == 1 else f"{err.retry_after} seconds"
        errors.add(CODE_FIELD, f"Too many wrong codes. Wait {wait}, then try again.")
        return False
    except AccountLocked:
        errors.add(
            CODE_FIELD,
            "Your account is locked after too many wrong codes. Ask your "
            "administrator to unlock it.",
        )
        return False
    except ConflictError:
        errors.add(
            CODE_FIELD,
            "This needs an authenticator app, and none is set up on your "
            "account. Set one up from 'Your account' first.",
        )
        return False
    return True
