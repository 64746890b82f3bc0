"""Small helpers for the words Handover shows people: counts with the right plural.

Pure: no I/O. Every message that puts a number before a noun goes through
:func:`plural`, so nobody is told to "wait 1 seconds" or that "1 entries" were chosen.
"""

from __future__ import annotations

from typing import Final

__all__ = ["plural", "plural_noun"]

#: Nouns whose plural is not made by the rules below.
_IRREGULAR: Final[dict[str, str]] = {
    "person": "people",
    "child": "children",
}
_VOWELS: Final = frozenset("aeiou")


def plural_noun(noun: str, count: int) -> str:
    """``noun`` as it reads after ``count``: "second" for 1, "seconds" otherwise.

    English rules for the nouns Handover uses: a consonant and "y" becomes "ies"
    (entry, entries); "s", "x", "ch" and "sh" take "es" (class, classes); a few
    irregular nouns are listed. The last word of a phrase is the one made plural
    ("school day", "school days").
    """
    if count == 1 or count == -1:
        return noun
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    head, sep, last = noun.rpartition(" ")
    if last in _IRREGULAR:
        return head + sep + _IRREGULAR[last]
    if len(last) > 1 and last.endswith("y") and last[-2].lower() not in _VOWELS:
        word = last[:-1] + "ies"
    elif last.endswith(("s", "x", "ch", "sh")):
        word = last + "es"
    else:
        word = last + "s"
    return head + sep + word


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``count`` and the noun in the right number: "1 second", "3 seconds", "0 entries".

    ``plural_form`` overrides the rules for an unusual noun.
    """
    if plural_form is not None and count not in (1, -1):
        return f"{count} {plural_form}"
    return f"{count} {plural_noun(noun, count)}"
