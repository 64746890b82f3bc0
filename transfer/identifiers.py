"""Identifiers used in English schools: UPN, URN, LAESTAB, LA codes, agency ids.

Pure functions, no I/O. Every validator returns the normalised identifier or
raises a subclass of :class:`transfer.errors.InputError` whose message is one
line written for a school administrator.

UPN (Unique Pupil Number)
-------------------------
13 characters: a check letter, the 3-digit LA code, the 4-digit establishment
number, a 2-digit year and a 3-digit serial. A *temporary* UPN ends in a
2-digit serial and a letter. The check letter: multiply characters 2-13 by the
weights 2-13 (a letter in position 13 counts as its index in
``ABCDEFGHJKLMNPQRTUVWXYZ``), sum, take the remainder modulo 23 and map 0-22
onto that same alphabet (no I, O or S).

Checks run in a fixed order and the first failure is reported, with the DfE's
error categories kept distinct (:class:`UPNErrorCategory`): wrong length;
characters 5-12 not all numeric; character 13 not a recognised value;
characters 2-4 not a recognised LA code; wrong check letter. Messages say
*that* a UPN is wrong and *which* rule failed, never what the right check
letter would be: the message must not become an oracle for making up UPNs.

LA codes
--------
The recognised 3-digit LA codes (``LA_CODES``) are the DfE "LA numbers" of
English local authorities as used in Get Information about Schools (GIAS) and
in the CTF specification, written down from the DfE list and checked against
the test UPNs in the brief (801 is Bristol). The list deliberately keeps the
codes of authorities abolished since 2009 (Bedfordshire 820, Cheshire 875,
Dorset 835, Poole 836, Bournemouth 837, Northamptonshire 928, Cumbria 909):
UPNs are for life, so pupils still carry UPNs issued under them. The 22 Welsh
LA codes (660-681) are recognised as well, because Welsh pupils cross the
border with Welsh UPNs and the CTF supports cross-border imports; they are
listed separately in ``WELSH_LA_CODES``. Nothing else is recognised (in
particular no "non-LA" or 0xx codes): an unknown code is far more likely a
typing error than a real UPN.
"""

from __future__ import annotations

import re
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from transfer.errors import InputError

#: The 23 letters used for check letters and temporary-UPN suffixes (no I, O, S).
UPN_ALPHABET: Final = "ABCDEFGHJKLMNPQRTUVWXYZ"
#: A UPN (permanent or temporary) is exactly this many characters.
UPN_LENGTH: Final = 13

_ENGLISH: Final[dict[str, str]] = {
    # Inner London
    "201": "City of London",
    "202": "Camden",
    "203": "Greenwich",
    "204": "Hackney",
    "205": "Hammersmith and Fulham",
    "206": "Islington",
    "207": "Kensington and Chelsea",
    "208": "Lambeth",
    "209": "Lewisham",
    "210": "Southwark",
    "211": "Tower Hamlets",
    "212": "Wandsworth",
    "213": "Westminster",
    # Outer London
    "301": "Barking and Dagenham",
    "302": "Barnet",
    "303": "Bexley",
    "304": "Brent",
    "305": "Bromley",
    "306": "Croydon",
    "307": "Ealing",
    "308": "Enfield",
    "309": "Haringey",
    "310": "Harrow",
    "311": "Havering",
    "312": "Hillingdon",
    "313": "Hounslow",
    "314": "Kingston upon Thames",
    "315": "Merton",
    "316": "Newham",
    "317": "Redbridge",
    "318": "Richmond upon Thames",
    "319": "Sutton",
    "320": "Waltham Forest",
    # Metropolitan districts
    "330": "Birmingham",
    "331": "Coventry",
    "332": "Dudley",
    "333": "Sandwell",
    "334": "Solihull",
    "335": "Walsall",
    "336": "Wolverhampton",
    "340": "Knowsley",
    "341": "Liverpool",
    "342": "St. Helens",
    "343": "Sefton",
    "344": "Wirral",
    "350": "Bolton",
    "351": "Bury",
    "352": "Manchester",
    "353": "Oldham",
    "354": "Rochdale",
    "355": "Salford",
    "356": "Stockport",
    "357": "Tameside",
    "358": "Trafford",
    "359": "Wigan",
    "370": "Barnsley",
    "371": "Doncaster",
    "372": "Rotherham",
    "373": "Sheffield",
    "380": "Bradford",
    "381": "Calderdale",
    "382": "Kirklees",
    "383": "Leeds",
    "384": "Wakefield",
    "390": "Gateshead",
    "391": "Newcastle upon Tyne",
    "392": "North Tyneside",
    "393": "South Tyneside",
    "394": "Sunderland",
    "420": "Isles of Scilly",
    # Unitary authorities and counties
    "800": "Bath and North East Somerset",
    "801": "Bristol, City of",
    "802": "North Somerset",
    "803": "South Gloucestershire",
    "805": "Hartlepool",
    "806": "Middlesbrough",
    "807": "Redcar and Cleveland",
    "808": "Stockton-on-Tees",
    "810": "Kingston upon Hull, City of",
    "811": "East Riding of Yorkshire",
    "812": "North East Lincolnshire",
    "813": "North Lincolnshire",
    "815": "North Yorkshire",
    "816": "York",
    "820": "Bedfordshire (abolished 2009)",
    "821": "Luton",
    "822": "Bedford",
    "823": "Central Bedfordshire",
    "825": "Buckinghamshire",
    "826": "Milton Keynes",
    "830": "Derbyshire",
    "831": "Derby",
    "835": "Dorset (until 2019)",
    "836": "Poole (until 2019)",
    "837": "Bournemouth (until 2019)",
    "838": "Dorset",
    "839": "Bournemouth, Christchurch and Poole",
    "840": "County Durham",
    "841": "Darlington",
    "845": "East Sussex",
    "846": "Brighton and Hove",
    "850": "Hampshire",
    "851": "Portsmouth",
    "852": "Southampton",
    "855": "Leicestershire",
    "856": "Leicester",
    "857": "Rutland",
    "860": "Staffordshire",
    "861": "Stoke-on-Trent",
    "865": "Wiltshire",
    "866": "Swindon",
    "867": "Bracknell Forest",
    "868": "Windsor and Maidenhead",
    "869": "West Berkshire",
    "870": "Reading",
    "871": "Slough",
    "872": "Wokingham",
    "873": "Cambridgeshire",
    "874": "Peterborough",
    "875": "Cheshire (abolished 2009)",
    "876": "Halton",
    "877": "Warrington",
    "878": "Devon",
    "879": "Plymouth",
    "880": "Torbay",
    "881": "Essex",
    "882": "Southend-on-Sea",
    "883": "Thurrock",
    "884": "Herefordshire",
    "885": "Worcestershire",
    "886": "Kent",
    "887": "Medway",
    "888": "Lancashire",
    "889": "Blackburn with Darwen",
    "890": "Blackpool",
    "891": "Nottinghamshire",
    "892": "Nottingham",
    "893": "Shropshire",
    "894": "Telford and Wrekin",
    "895": "Cheshire East",
    "896": "Cheshire West and Chester",
    "908": "Cornwall",
    "909": "Cumbria (until 2023)",
    "916": "Gloucestershire",
    "919": "Hertfordshire",
    "921": "Isle of Wight",
    "925": "Lincolnshire",
    "926": "Norfolk",
    "928": "Northamptonshire (until 2021)",
    "929": "Northumberland",
    "931": "Oxfordshire",
    "933": "Somerset",
    "935": "Suffolk",
    "936": "Surrey",
    "937": "Warwickshire",
    "938": "West Sussex",
    "940": "North Northamptonshire",
    "941": "West Northamptonshire",
    "942": "Cumberland",
    "943": "Westmorland and Furness",
}

_WELSH: Final[dict[str, str]] = {
    "660": "Isle of Anglesey",
    "661": "Gwynedd",
    "662": "Conwy",
    "663": "Denbighshire",
    "664": "Flintshire",
    "665": "Wrexham",
    "666": "Powys",
    "667": "Ceredigion",
    "668": "Pembrokeshire",
    "669": "Carmarthenshire",
    "670": "Swansea",
    "671": "Neath Port Talbot",
    "672": "Bridgend",
    "673": "Vale of Glamorgan",
    "674": "Rhondda Cynon Taf",
    "675": "Merthyr Tydfil",
    "676": "Caerphilly",
    "677": "Blaenau Gwent",
    "678": "Torfaen",
    "679": "Monmouthshire",
    "680": "Newport",
    "681": "Cardiff",
}

#: English LA codes (current and recently abolished) to names.
ENGLISH_LA_CODES: Final = frozenset(_ENGLISH)
#: Welsh LA codes, recognised for cross-border pupils.
WELSH_LA_CODES: Final = frozenset(_WELSH)
#: Every recognised LA code mapped to the authority's name.
LA_CODES: Final = MappingProxyType({**_ENGLISH, **_WELSH})

_MAX_ECHO = 24
_ECHO_SAFE = re.compile(r"[^A-Za-z0-9 \-_.]")


def _echo(text: str) -> str:
    """A short, printable, single-line rendering of user input for messages."""
    shown = _ECHO_SAFE.sub("?", text[:_MAX_ECHO])
    return shown + ("..." if len(text) > _MAX_ECHO else "")


class InvalidIdentifier(InputError):
    """An identifier (UPN, URN, LAESTAB, LA code, agency id) is not valid."""

    slug = "invalid-identifier"
    title = "The identifier is not valid"

    def __init__(self, message: str, *, kind: str, category: str) -> None:
        super().__init__(message, detail={"identifier": kind, "category": category})
        #: Which identifier: "upn", "urn", "laestab", "la-code", "agency-id".
        self.kind = kind
        #: Which rule failed (for a UPN, a :class:`UPNErrorCategory` value).
        self.category = category


class UPNErrorCategory(StrEnum):
    """Which DfE UPN rule a value breaks."""

    WRONG_LENGTH = "wrong-length"
    CHECK_LETTER = "check-letter"
    LA_CODE = "la-code"
    NOT_NUMERIC = "not-numeric"
    CHARACTER_13 = "character-13"


class InvalidUPN(InvalidIdentifier):
    """A UPN breaks one of the DfE rules; ``category`` says which."""

    slug = "invalid-upn"
    title = "The UPN is not valid"

    def __init__(self, message: str, category: UPNErrorCategory) -> None:
        super().__init__(message, kind="upn", category=category.value)
        self.category: UPNErrorCategory = category


def _char_value(ch: str, position: int) -> int:
    """Value of a body character (positions 2-13, 1-based) in the check sum."""
    if ch.isdigit() and ch.isascii():
        return int(ch)
    if position == 13 and ch in UPN_ALPHABET:
        return UPN_ALPHABET.index(ch)
    raise ValueError(f"character {position} cannot take part in a UPN check sum")


def upn_check_letter(body12: str) -> str:
    """The check letter for the 12 characters after it (positions 2-13).

    ``body12`` must be 11 ASCII digits followed by a digit or a letter of
    :data:`UPN_ALPHABET` (upper case); anything else raises ``ValueError``
    (a programming error, not user input: use :func:`validate_upn` for that).
    """
    if len(body12) != 12:
        raise ValueError("a UPN body is exactly 12 characters")
    total = sum(weight * _char_value(ch, weight) for weight, ch in enumerate(body12, start=2))
    return UPN_ALPHABET[total % 23]


def is_temporary_upn(upn: str) -> bool:
    """True if a (well-formed) UPN is a temporary one: it ends in a letter."""
    upn = upn.strip().upper()
    return len(upn) == 13 and upn[12] in UPN_ALPHABET


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def validate_upn(text: str) -> str:
    """Return the normalised UPN (upper case, stripped) or raise :class:`InvalidUPN`."""
    upn = text.strip().upper()
    shown = _echo(upn)
    if len(upn) != UPN_LENGTH:
        raise InvalidUPN(
            f"UPN '{shown}' has {len(upn)} characters; a UPN has exactly {UPN_LENGTH}.",
            UPNErrorCategory.WRONG_LENGTH,
        )
    if not _ascii_digits(upn[4:12]):
        raise InvalidUPN(
            f"UPN '{shown}' is not valid: characters 5 to 12 must all be digits.",
            UPNErrorCategory.NOT_NUMERIC,
        )
    if not (_ascii_digits(upn[12]) or upn[12] in UPN_ALPHABET):
        raise InvalidUPN(
            f"UPN '{shown}' is not valid: the last character must be a digit, or for a "
            "temporary UPN a letter other than I, O or S.",
            UPNErrorCategory.CHARACTER_13,
        )
    if upn[1:4] not in LA_CODES:
        raise InvalidUPN(
            f"UPN '{shown}' is not valid: characters 2 to 4 are not a recognised LA code.",
            UPNErrorCategory.LA_CODE,
        )
    if upn[0] != upn_check_letter(upn[1:]):
        raise InvalidUPN(
            f"UPN '{shown}' has the wrong check letter; check it was copied correctly "
            "from the pupil's record.",
            UPNErrorCategory.CHECK_LETTER,
        )
    return upn


def validate_la_code(text: str) -> str:
    """Return a recognised 3-digit LA code (stripped) or raise :class:`InvalidIdentifier`."""
    code = text.strip()
    if not (len(code) == 3 and _ascii_digits(code)):
        raise InvalidIdentifier(
            f"LA code '{_echo(code)}' is not valid: an LA code is exactly 3 digits.",
            kind="la-code",
            category="format",
        )
    if code not in LA_CODES:
        raise InvalidIdentifier(
            f"LA code '{code}' is not a recognised local authority number.",
            kind="la-code",
            category="unknown-la",
        )
    return code


def validate_urn(text: str) -> str:
    """Return a school URN (exactly 6 digits, stripped) or raise :class:`InvalidIdentifier`."""
    urn = text.strip()
    if not (len(urn) == 6 and _ascii_digits(urn)):
        raise InvalidIdentifier(
            f"URN '{_echo(urn)}' is not valid: a URN is exactly 6 digits.",
            kind="urn",
            category="format",
        )
    return urn


def validate_establishment_number(text: str) -> str:
    """Return a 4-digit establishment number (stripped) or raise :class:`InvalidIdentifier`."""
    estab = text.strip()
    if not (len(estab) == 4 and _ascii_digits(estab)):
        raise InvalidIdentifier(
            f"Establishment number '{_echo(estab)}' is not valid: it is exactly 4 digits.",
            kind="estab",
            category="format",
        )
    return estab


def validate_laestab(text: str) -> str:
    """Return a LAESTAB ("DfE number") as 7 digits, or raise :class:`InvalidIdentifier`.

    Accepts the common written forms ``8012000``, ``801/2000`` and ``801-2000``;
    the first three digits must be a recognised LA code.
    """
    raw = text.strip()
    compact = raw.replace("/", "", 1) if len(raw) == 8 and raw[3] == "/" else raw
    compact = compact.replace("-", "", 1) if len(compact) == 8 and compact[3] == "-" else compact
    if not (len(compact) == 7 and _ascii_digits(compact)):
        raise InvalidIdentifier(
            f"LAESTAB '{_echo(raw)}' is not valid: it is 7 digits, the 3-digit LA code "
            "then the 4-digit establishment number.",
            kind="laestab",
            category="format",
        )
    if compact[:3] not in LA_CODES:
        raise InvalidIdentifier(
            f"LAESTAB '{compact}' is not valid: its first 3 digits are not a recognised LA code.",
            kind="laestab",
            category="unknown-la",
        )
    return compact


_AGENCY_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{1,62})[a-z0-9]")


def validate_agency_id(text: str) -> str:
    """Return an agency identifier (e.g. ``mash-bristol``) or raise :class:`InvalidIdentifier`.

    3-64 characters of lower-case ASCII letters, digits and hyphens, not
    starting or ending with a hyphen. Surrounding spaces are stripped and
    upper-case letters folded to lower case.
    """
    slug = text.strip().lower()
    if not (slug.isascii() and _AGENCY_ID.fullmatch(slug)):
        raise InvalidIdentifier(
            f"Agency id '{_echo(slug)}' is not valid: use 3 to 64 lower-case letters, "
            "digits and hyphens, not starting or ending with a hyphen.",
            kind="agency-id",
            category="format",
        )
    return slug
