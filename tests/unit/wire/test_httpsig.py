"""RFC 9421 request signatures and RFC 9530 Content-Digest (transfer.httpsig).

External vectors, quoted from the RFCs (IETF Trust; code components under the
Revised BSD licence):

- RFC 9421 Appendix B.1.4 ``test-key-ed25519`` (the PKCS#8 private key below)
  and Appendix B.2.6 "Signing a Request Using ed25519": the signature base and
  the signature value over the Appendix B.2 test request.
- RFC 9421 Appendix B.2 test request's ``Content-Digest: sha-512=:...:``.
- RFC 9530 Appendix B.1: ``Content-Digest`` values of ``{"hello": "world"}\\n``.

Ed25519 is deterministic, so reproducing the RFC's signature bytes checks the
signature base byte for byte.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from nacl.signing import SigningKey, VerifyKey

from keys.keyset import derive_key_id, format_key_id
from transfer import httpsig
from transfer.errors import AuthenticationError, InputError, IntegrityError
from transfer.httpsig import (
    COVERED,
    TAG,
    BadSignatureError,
    DigestHasher,
    DigestMismatchError,
    ExpiredSignatureError,
    MalformedSignatureError,
    UnsignedRequestError,
    VerifiedRequest,
    check_digest,
    content_digest,
    parse_content_digest,
    sign_request,
    signature_base_for,
    signature_key_id,
    verify_request,
)

# ----------------------------------------------------------------- RFC vectors

RFC_PRIVATE_KEY_PKCS8 = "MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF"
RFC_PUBLIC_KEY_SPKI = "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs="
RFC_SEED = base64.b64decode(RFC_PRIVATE_KEY_PKCS8)[-32:]
RFC_PUBLIC = base64.b64decode(RFC_PUBLIC_KEY_SPKI)[-32:]

RFC_TARGET = "https://example.com/foo?param=Value&Pet=dog"
RFC_HEADERS = {
    "Host": "example.com",
    "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
    "Content-Type": "application/json",
    "Content-Digest": "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNy"
    "ealdVLvRwEmTHWXvJwew==:",
    "Content-Length": "18",
}
RFC_BODY = b'{"hello": "world"}'
RFC_B26_SIGNATURE_INPUT = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
RFC_B26_SIGNATURE = (
    "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPp"
    "BKRCw==:"
)
RFC_B26_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@method": POST\n'
    '"@path": /foo\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"content-length": 18\n'
    '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" '
    '"content-length");created=1618884473;keyid="test-key-ed25519"'
)


def test_rfc9421_b26_signature_base_and_signature_are_reproduced() -> None:
    base = signature_base_for("POST", RFC_TARGET, RFC_HEADERS, RFC_B26_SIGNATURE_INPUT, "sig-b26")
    assert base == RFC_B26_BASE.encode("ascii")
    assert bytes(SigningKey(RFC_SEED).verify_key) == RFC_PUBLIC
    signature = SigningKey(RFC_SEED).sign(base).signature
    expected = RFC_B26_SIGNATURE.removeprefix("sig-b26=:").removesuffix(":")
    assert base64.b64encode(signature).decode() == expected
    VerifyKey(RFC_PUBLIC).verify(base, base64.b64decode(expected))


def test_rfc9421_b2_content_digest_sha512_is_the_test_requests() -> None:
    # The RFC's request carries only sha-512: well-formed, but this profile needs sha-256.
    with pytest.raises(MalformedSignatureError, match="must include sha-256"):
        parse_content_digest(RFC_HEADERS["Content-Digest"])
    sha256 = content_digest(RFC_BODY).removeprefix("sha-256=")
    both = RFC_HEADERS["Content-Digest"] + ", sha-256=" + sha256
    assert base64.b64encode(parse_content_digest(both)).decode() == sha256.strip(":")


def test_rfc9530_b1_content_digest() -> None:
    body = b'{"hello": "world"}\n'
    assert content_digest(body) == "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"
    header = (
        "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:, "
        "sha-512=:YMAam51Jz/jOATT6/zvHrLVgOYTGFy1d6GJiOHTohq4yP+pgk4vf2aCsyRZOtw8MjkM7iw7yZ/WkppmM44T3qg==:"
    )
    check_digest(header, _hashed(body).digest())


def test_the_rfc_example_is_refused_by_the_profile() -> None:
    """A valid RFC signature without our tag, nonce and covered set is still refused."""
    headers = {
        **RFC_HEADERS,
        "Signature-Input": RFC_B26_SIGNATURE_INPUT,
        "Signature": RFC_B26_SIGNATURE,
    }
    with pytest.raises(MalformedSignatureError, match="labelled 'sig-b26'"):
        verify_request(
            "POST", RFC_TARGET, headers, public_key_for=lambda _: RFC_PUBLIC, now=1618884473
        )


# -------------------------------------------------------------------- helpers

SEED = bytes(range(32))
PUBLIC = bytes(SigningKey(SEED).verify_key)
KEY_ID = "1A2B3C4D5E6F7081"
TARGET = "https://riverside.example:8443/peer/v1/packages"
NOW = 1_800_000_000
NONCE = "n0nce-0123456789abcdef"
BODY = b'{"package_id": "0b6c2f7e-9a1d-4c1b-8d2e-3f4a5b6c7d8e"}'


def _hashed(data: bytes) -> DigestHasher:
    h = DigestHasher()
    h.update(data)
    return h


def _signed(
    method: str = "POST",
    target: str = TARGET,
    body: bytes = BODY,
    *,
    created: int = NOW,
    nonce: str = NONCE,
    key_id: str = KEY_ID,
) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Content-Digest": content_digest(body)}
    headers.update(
        sign_request(
            method, target, headers, key_id=key_id, private_key=SEED, created=created, nonce=nonce
        )
    )
    return headers


def _keys(mapping: dict[str, bytes] | None = None) -> Callable[[str], bytes]:
    known = {KEY_ID: PUBLIC} if mapping is None else mapping

    def lookup(key_id: str) -> bytes:
        if key_id not in known:
            raise AuthenticationError(f"no organisation has signing key {key_id}")
        return known[key_id]

    return lookup


def _verify(
    headers: Mapping[str, str],
    method: str = "POST",
    target: str = TARGET,
    *,
    now: int = NOW,
    max_skew: int = 300,
    keys: Callable[[str], bytes] | None = None,
) -> VerifiedRequest:
    return verify_request(
        method, target, headers, public_key_for=keys or _keys(), now=now, max_skew=max_skew
    )


def _with_input(headers: dict[str, str], old: str, new: str) -> dict[str, str]:
    assert old in headers["Signature-Input"], old
    return {**headers, "Signature-Input": headers["Signature-Input"].replace(old, new)}


# ----------------------------------------------------------------- round trip


def test_sign_writes_the_documented_headers() -> None:
    headers = _signed()
    assert headers["Signature-Input"] == (
        'sig1=("@method" "@target-uri" "content-digest");created=1800000000;'
        f'keyid="{KEY_ID}";nonce="{NONCE}";alg="ed25519";tag="handover-peer-v1"'
    )
    assert re.fullmatch(r"sig1=:[A-Za-z0-9+/]{86}==:", headers["Signature"])
    base = signature_base_for("POST", TARGET, headers, headers["Signature-Input"], "sig1")
    assert base.decode() == (
        '"@method": POST\n'
        f'"@target-uri": {TARGET}\n'
        f'"content-digest": {content_digest(BODY)}\n'
        '"@signature-params": ("@method" "@target-uri" "content-digest");created=1800000000;'
        f'keyid="{KEY_ID}";nonce="{NONCE}";alg="ed25519";tag="handover-peer-v1"'
    )
    sig = base64.b64decode(headers["Signature"][len("sig1=:") : -1])
    VerifyKey(PUBLIC).verify(base, sig)


def test_round_trip_returns_key_created_nonce_and_body_digest() -> None:
    seen: list[str] = []

    def lookup(key_id: str) -> bytes:
        seen.append(key_id)
        return PUBLIC

    verified = _verify(_signed(), keys=lookup)
    assert verified == VerifiedRequest(
        key_id=KEY_ID,
        created=NOW,
        nonce=NONCE,
        content_sha256=parse_content_digest(content_digest(BODY)),
    )
    assert seen == [KEY_ID]
    check_digest(content_digest(BODY), verified.content_sha256)


def test_lower_case_key_id_is_written_and_returned_in_minisign_form() -> None:
    headers = _signed(key_id=KEY_ID.lower())
    assert f'keyid="{KEY_ID}"' in headers["Signature-Input"]
    assert signature_key_id(headers) == KEY_ID
    assert _verify(headers).key_id == KEY_ID


def test_defaults_give_fresh_time_and_nonce() -> None:
    headers: dict[str, str] = {"Content-Digest": content_digest(b"")}
    a = sign_request("GET", TARGET, headers, key_id=KEY_ID, private_key=SEED)
    b = sign_request("GET", TARGET, headers, key_id=KEY_ID, private_key=SEED)
    first = verify_request("GET", TARGET, {**headers, **a}, public_key_for=_keys(), now=_created(a))
    second = verify_request(
        "GET", TARGET, {**headers, **b}, public_key_for=_keys(), now=_created(b)
    )
    assert first.nonce != second.nonce
    assert len(first.nonce) >= 16


def _created(sig_headers: Mapping[str, str]) -> int:
    found = re.search(r";created=(\d+);", sig_headers["Signature-Input"])
    assert found
    return int(found.group(1))


def test_case_insensitive_headers_from_a_multidict() -> None:
    headers = CIMultiDict(_signed())
    assert _verify(headers).nonce == NONCE
    lower = {k.lower(): v for k, v in _signed().items()}
    assert _verify(lower).nonce == NONCE


def test_extra_covered_headers_are_accepted_when_signed() -> None:
    """A signer may cover more than COVERED (all of COVERED is still required)."""
    sig_input = (
        'sig1=("@method" "@target-uri" "content-digest" "content-type");created=1800000000;'
        f'keyid="{KEY_ID}";nonce="{NONCE}";tag="{TAG}"'
    )
    headers = {"Content-Type": "application/json", "Content-Digest": content_digest(BODY)}
    base = signature_base_for("POST", TARGET, headers, sig_input, "sig1")
    sig = base64.b64encode(SigningKey(SEED).sign(base).signature).decode()
    signed = {**headers, "Signature-Input": sig_input, "Signature": f"sig1=:{sig}:"}
    assert _verify(signed).key_id == KEY_ID
    with pytest.raises(BadSignatureError):
        _verify({**signed, "Content-Type": "text/plain"})


# ------------------------------------------------------------------ mutations


def test_each_mutation_is_refused() -> None:
    headers = _signed()
    other_digest = content_digest(BODY + b" ")
    cases: list[tuple[str, Callable[[], VerifiedRequest]]] = [
        ("method", lambda: _verify(headers, method="PUT")),
        ("uri path", lambda: _verify(headers, target=TARGET + "/other")),
        ("uri query", lambda: _verify(headers, target=TARGET + "?x=1")),
        ("uri host", lambda: _verify(headers, target=TARGET.replace("riverside", "hillside"))),
        ("uri port", lambda: _verify(headers, target=TARGET.replace(":8443", ":9443"))),
        ("uri scheme", lambda: _verify(headers, target=TARGET.replace("https", "http"))),
        ("digest", lambda: _verify({**headers, "Content-Digest": other_digest})),
        (
            "created",
            lambda: _verify(_with_input(headers, "created=1800000000", "created=1800000001")),
        ),
        ("nonce", lambda: _verify(_with_input(headers, NONCE, NONCE[:-1] + "X"))),
        ("alg removed", lambda: _verify(_with_input(headers, ';alg="ed25519"', ""))),
        (
            "components reordered",
            lambda: _verify(
                _with_input(headers, '"@method" "@target-uri"', '"@target-uri" "@method"')
            ),
        ),
    ]
    for what, attempt in cases:
        with pytest.raises(BadSignatureError, match="does not verify"):
            attempt()
            pytest.fail(f"the {what} mutation was accepted")


def test_changed_keyid_is_refused() -> None:
    headers = _with_input(_signed(), KEY_ID, "0000000000000001")
    both = _keys({KEY_ID: PUBLIC, "0000000000000001": PUBLIC})
    with pytest.raises(BadSignatureError, match="does not verify with key 0000000000000001"):
        _verify(headers, keys=both)
    with pytest.raises(AuthenticationError, match="no organisation has signing key"):
        _verify(headers)


def test_another_key_is_refused() -> None:
    other = bytes(SigningKey(bytes(32)).verify_key)
    with pytest.raises(BadSignatureError, match="does not verify"):
        _verify(_signed(), keys=_keys({KEY_ID: other}))


def test_a_key_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(BadSignatureError, match="not a 32-byte"):
        _verify(_signed(), keys=_keys({KEY_ID: PUBLIC[:31]}))


def test_changed_tag_is_refused_as_another_purpose() -> None:
    headers = _with_input(_signed(), TAG, "handover-peer-v2")
    with pytest.raises(BadSignatureError, match="another purpose"):
        _verify(headers)


def test_changed_alg_is_refused() -> None:
    headers = _with_input(_signed(), 'alg="ed25519"', 'alg="rsa-pss-sha512"')
    with pytest.raises(BadSignatureError, match="algorithm must be ed25519"):
        _verify(headers)


def test_changed_label_is_refused() -> None:
    headers = _signed()
    relabelled = {
        **headers,
        "Signature-Input": headers["Signature-Input"].replace("sig1=", "sig2=", 1),
        "Signature": headers["Signature"].replace("sig1=", "sig2=", 1),
    }
    with pytest.raises(MalformedSignatureError, match="labelled 'sig2', not 'sig1'"):
        _verify(relabelled)
    one_side = {**headers, "Signature": headers["Signature"].replace("sig1=", "sig2=", 1)}
    with pytest.raises(MalformedSignatureError, match="labelled 'sig2'"):
        _verify(one_side)


@pytest.mark.parametrize("position", [0, 17, 40, 63])
def test_flipped_signature_bits_are_refused(position: int) -> None:
    headers = _signed()
    sig = bytearray(base64.b64decode(headers["Signature"][len("sig1=:") : -1]))
    sig[position] ^= 0x01
    tampered = {**headers, "Signature": f"sig1=:{base64.b64encode(bytes(sig)).decode()}:"}
    with pytest.raises(BadSignatureError, match="does not verify"):
        _verify(tampered)


def test_covered_set_must_include_every_required_component() -> None:
    headers = _with_input(_signed(), ' "content-digest"', "")
    with pytest.raises(BadSignatureError, match="does not cover content-digest"):
        _verify(headers)
    headers = _with_input(_signed(), '"@target-uri" ', "")
    with pytest.raises(BadSignatureError, match="does not cover @target-uri"):
        _verify(headers)


# ------------------------------------------------------------------ clock skew


@pytest.mark.parametrize(
    ("now", "ok"),
    [
        (NOW, True),
        (NOW + 300, True),
        (NOW - 300, True),
        (NOW + 301, False),
        (NOW - 301, False),
        (NOW + 86_400, False),
    ],
)
def test_skew_window_edges(now: int, ok: bool) -> None:
    headers = _signed()
    if ok:
        assert _verify(headers, now=now).created == NOW
    else:
        with pytest.raises(ExpiredSignatureError, match="more than 300 seconds") as info:
            _verify(headers, now=now)
        assert info.value.http_status == 401


def test_skew_window_is_configurable() -> None:
    headers = _signed()
    assert _verify(headers, now=NOW + 10, max_skew=10).nonce == NONCE
    with pytest.raises(ExpiredSignatureError):
        _verify(headers, now=NOW + 11, max_skew=10)
    with pytest.raises(InputError, match="cannot be negative"):
        _verify(headers, max_skew=-1)


def test_a_forged_old_signature_reports_the_signature_not_the_time() -> None:
    headers = _with_input(_signed(), "created=1800000000", "created=1700000000")
    with pytest.raises(BadSignatureError):
        _verify(headers)


# ----------------------------------------------------------- malformed headers


def test_unsigned_request() -> None:
    with pytest.raises(UnsignedRequestError, match="not signed") as info:
        _verify({"Content-Digest": content_digest(BODY)})
    assert info.value.http_status == 401


def test_half_signed_request() -> None:
    headers = _signed()
    for missing in ("Signature", "Signature-Input"):
        partial = {k: v for k, v in headers.items() if k != missing}
        with pytest.raises(MalformedSignatureError, match=f"no {missing} header") as info:
            _verify(partial)
        assert info.value.http_status == 400


GOOD_PARAMS = f';created=1800000000;keyid="{KEY_ID}";nonce="{NONCE}";tag="{TAG}"'
GOOD_COMPONENTS = '("@method" "@target-uri" "content-digest")'


@pytest.mark.parametrize(
    ("signature_input", "message"),
    [
        ("", "exactly one signature"),
        ("sig1", "must be a list of covered components"),
        ('sig1="@method"' + GOOD_PARAMS, "must be a list of covered components"),
        ('sig1=("@method" "@target-uri" "content-digest"' + GOOD_PARAMS, "expected ' ' or ')'"),
        ('sig1=("@method" "@target-uri" "content-digest)', "not closed"),
        ("sig1=" + GOOD_COMPONENTS + GOOD_PARAMS + ",", "trailing ','"),
        ("sig1=" + GOOD_COMPONENTS + GOOD_PARAMS + ", sig2=()", "exactly one signature"),
        ("sig1=()" + GOOD_PARAMS + ", sig1=()", "appears twice"),
        ("Sig1=" + GOOD_COMPONENTS + GOOD_PARAMS, "lower-case key"),
        ("sig1=" + GOOD_COMPONENTS + GOOD_PARAMS.replace(";created=1800000000", ""), "created"),
        ("sig1=" + GOOD_COMPONENTS + GOOD_PARAMS.replace(f';keyid="{KEY_ID}"', ""), "keyid"),
        ("sig1=" + GOOD_COMPONENTS + GOOD_PARAMS.replace(f';nonce="{NONCE}"', ""), "nonce"),
        ("sig1=" + GOOD_COMPONENTS + GOOD_PARAMS.replace(f';tag="{TAG}"', ""), "tag"),
        ("sig1=" + GOOD_COMPONENTS + GOOD_PARAMS.replace("=1800000000", '="1800000000"'), "Unix"),
        ("sig1=" + GOOD_COMPONENTS + GOOD_PARAMS.replace("=1800000000", "=-5"), "Unix time"),
        ("sig1=" + GOOD_COMPONENTS + GOOD_PARAMS.replace("=1800000000", "=18.5"), "Unix time"),
        ("sig1=" + GOOD_COMPONENTS + GOOD_PARAMS.replace(KEY_ID, "test-key"), "16 hexadecimal"),
        ("sig1=" + GOOD_COMPONENTS + GOOD_PARAMS.replace(NONCE, "short"), "16 to 128"),
        ("sig1=" + GOOD_COMPONENTS + GOOD_PARAMS.replace(f'"{TAG}"', "handover"), "quoted"),
        ("sig1=" + GOOD_COMPONENTS + GOOD_PARAMS + ";expires=1800000300", "expires"),
        ("sig1=" + GOOD_COMPONENTS + GOOD_PARAMS + ";created=1", "appears twice"),
        (
            'sig1=("@method" "@target-uri" "content-digest";sf)' + GOOD_PARAMS,
            "has parameters",
        ),
        (
            'sig1=("@method" "@method" "@target-uri" "content-digest")' + GOOD_PARAMS,
            "covered twice",
        ),
        ('sig1=("@method" "@target-uri" "content-digest" @path)' + GOOD_PARAMS, "unexpected '@'"),
        ('sig1=("@method" "@target-uri" "content-digest" date)' + GOOD_PARAMS, "quoted string"),
        ('sig1=("@method" "@target-uri" "content-digest" 7)' + GOOD_PARAMS, "quoted string"),
        (
            'sig1=("@method" "@target-uri" "content-digest" "@signature-params")' + GOOD_PARAMS,
            "may not be a covered component",
        ),
        (
            'sig1=("@method" "@target-uri" "content-digest" "@status")' + GOOD_PARAMS,
            "not supported",
        ),
        (
            'sig1=("@method" "@target-uri" "content-digest" "x-missing")' + GOOD_PARAMS,
            "x-missing header, which is missing",
        ),
        ('sig1=("@method" "@target-uri" "content-digest" "caf\u00e9")' + GOOD_PARAMS, "ASCII"),
        ('sig1=("@method\\x")' + GOOD_PARAMS, "not followed by"),
        ("sig1=" + GOOD_COMPONENTS + ";created=1" + "0" * 16, "more than 15 digits"),
        ("sig1=" + GOOD_COMPONENTS + GOOD_PARAMS + "x" * 5000, "longer than 4096"),
    ],
)
def test_malformed_signature_input(signature_input: str, message: str) -> None:
    headers = {**_signed(), "Signature-Input": signature_input}
    with pytest.raises(MalformedSignatureError, match=re.escape(message)) as info:
        _verify(headers)
    assert info.value.http_status == 400
    assert isinstance(info.value, InputError)


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        ("sig1=:AAAA", "not closed with ':'"),
        ("sig1=:not base64!:", "not base64"),
        ("sig1=:AAA:", "padded base64"),
        ("sig1=:" + base64.b64encode(bytes(63)).decode() + ":", "64-byte"),
        ('sig1="' + "A" * 88 + '"', "byte sequence"),
        ("sig1=:" + base64.b64encode(bytes(64)).decode() + ":;alg=1", "parameters"),
        ("sig1=(:" + base64.b64encode(bytes(64)).decode() + ":)", "byte sequence"),
        ("sig1=?1", "byte sequence"),
        ("sig1=:" + base64.b64encode(bytes(64)).decode() + ": , sig2=:AA==:", "exactly one"),
    ],
)
def test_malformed_signature(signature: str, message: str) -> None:
    headers = {**_signed(), "Signature": signature}
    with pytest.raises(MalformedSignatureError, match=re.escape(message)):
        _verify(headers)


def test_an_all_zero_signature_is_refused() -> None:
    headers = {**_signed(), "Signature": "sig1=:" + base64.b64encode(bytes(64)).decode() + ":"}
    with pytest.raises(BadSignatureError, match="does not verify"):
        _verify(headers)


def test_a_header_sent_twice_is_refused() -> None:
    headers = CIMultiDict(_signed())
    headers.add("Signature", headers["Signature"])
    with pytest.raises(MalformedSignatureError, match="signature header appears more than once"):
        _verify(headers)
    doubled = {**_signed(), "content-digest": content_digest(BODY)}
    with pytest.raises(MalformedSignatureError, match="content-digest header appears more than"):
        _verify(doubled)


def test_missing_or_malformed_content_digest_on_verify() -> None:
    headers = {k: v for k, v in _signed().items() if k != "Content-Digest"}
    with pytest.raises(MalformedSignatureError, match="content-digest header, which is missing"):
        _verify(headers)
    with pytest.raises(BadSignatureError, match="does not verify"):
        _verify({**_signed(), "Content-Digest": "sha-512=:AAAA:"})
    # Signed over a Content-Digest without sha-256 (sign_request refuses to make one).
    sig_input = "sig1=" + GOOD_COMPONENTS + GOOD_PARAMS
    unsigned = {"Content-Digest": "sha-512=:AAAA:"}
    base = signature_base_for("POST", TARGET, unsigned, sig_input, "sig1")
    sig = base64.b64encode(SigningKey(SEED).sign(base).signature).decode()
    signed = {**unsigned, "Signature-Input": sig_input, "Signature": f"sig1=:{sig}:"}
    with pytest.raises(MalformedSignatureError, match="must include sha-256"):
        _verify(signed)


def test_control_characters_in_a_covered_header_cannot_be_signed() -> None:
    headers = {"Content-Digest": content_digest(BODY) + '\n"@method": GET'}
    with pytest.raises(MalformedSignatureError):
        sign_request("POST", TARGET, headers, key_id=KEY_ID, private_key=SEED)


# --------------------------------------------------------------- signing input


def test_sign_request_refuses_bad_input() -> None:
    digest = {"Content-Digest": content_digest(BODY)}
    with pytest.raises(InputError, match="Content-Digest header before it is signed"):
        sign_request("POST", TARGET, {}, key_id=KEY_ID, private_key=SEED)
    with pytest.raises(InputError, match="32 bytes"):
        sign_request("POST", TARGET, digest, key_id=KEY_ID, private_key=SEED[:31])
    with pytest.raises(InputError, match="16 hexadecimal"):
        sign_request("POST", TARGET, digest, key_id="xyz", private_key=SEED)
    with pytest.raises(InputError, match="nonce"):
        sign_request("POST", TARGET, digest, key_id=KEY_ID, private_key=SEED, nonce="a b")
    with pytest.raises(InputError, match="created"):
        sign_request("POST", TARGET, digest, key_id=KEY_ID, private_key=SEED, created=-1)
    with pytest.raises(InputError, match="method"):
        sign_request("PO ST", TARGET, digest, key_id=KEY_ID, private_key=SEED)
    for uri in (
        "/peer/v1/packages",
        "ftp://riverside.example/x",
        TARGET + "#frag",
        "https://user@riverside.example/x",
        "https://riverside.example/a b",
        "https://[::1/x",
    ):
        with pytest.raises(InputError, match="URI"):
            sign_request("POST", uri, digest, key_id=KEY_ID, private_key=SEED)


# ------------------------------------------------------------- content digest


def test_digest_hasher_streams_to_the_same_value() -> None:
    data = bytes(range(256)) * 1000
    hasher = DigestHasher()
    for i in range(0, len(data), 4093):
        hasher.update(data[i : i + 4093])
    assert hasher.size == len(data)
    assert hasher.header() == content_digest(data)
    assert parse_content_digest(hasher.header()) == hasher.digest()


def test_check_digest_matches_and_refuses() -> None:
    header = content_digest(BODY)
    check_digest(header, _hashed(BODY).digest())
    check_digest(header, _hashed(BODY).header())
    with pytest.raises(DigestMismatchError, match="altered or cut short") as info:
        check_digest(header, _hashed(BODY[:-1]).digest())
    assert isinstance(info.value, IntegrityError) and info.value.http_status == 422
    with pytest.raises(InputError, match="32 bytes"):
        check_digest(header, b"short")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("", "must include sha-256 (it lists nothing)"),
        ("sha-512=:AAAA:", "must include sha-256 (it lists sha-512)"),
        ("sha-256=AAAA", "not a byte sequence"),
        ('sha-256="abc"', "not a byte sequence"),
        ("sha-256=:AAAA:", "not 32 bytes"),
        ("sha-256=:@@@@:", "not base64"),
        ("SHA-256=:" + base64.b64encode(bytes(32)).decode() + ":", "lower-case key"),
        ("sha-256=:" + base64.b64encode(bytes(32)).decode() + ":,", "trailing"),
        ("sha-256=:" + base64.b64encode(bytes(32)).decode() + ": sha-512=:AA==:", "expected ','"),
    ],
)
def test_malformed_content_digest(header: str, message: str) -> None:
    with pytest.raises(MalformedSignatureError, match=re.escape(message)):
        parse_content_digest(header)


def test_content_digest_with_parameters_and_spaces() -> None:
    value = base64.b64encode(bytes(32)).decode()
    assert parse_content_digest(f"  sha-512=:AA==:;x=1 ,\tsha-256=:{value}:  ") == bytes(32)


def test_errors_are_in_the_project_tree() -> None:
    assert issubclass(UnsignedRequestError, AuthenticationError)
    assert issubclass(BadSignatureError, AuthenticationError)
    assert issubclass(ExpiredSignatureError, AuthenticationError)
    assert issubclass(MalformedSignatureError, InputError)
    assert issubclass(DigestMismatchError, IntegrityError)
    assert COVERED == ("@method", "@target-uri", "content-digest")
    assert httpsig.TAG == "handover-peer-v1"


def test_the_example_in_the_docs_is_exact() -> None:
    """docs/http-signatures.md shows a request and its base; both come from this code."""
    doc = (Path(__file__).resolve().parents[3] / "docs" / "http-signatures.md").read_text()
    example = doc.split("## Example", 1)[1]
    blocks = re.findall(r"```\n(.*?)```", example, flags=re.S)
    request_text, base_text = blocks[0], blocks[1]
    head, body_text = request_text.split("\n\n", 1)
    body = body_text.rstrip("\n").encode()
    lines = head.splitlines()
    assert lines[0] == "POST /peer/v1/packages HTTP/1.1"
    shown = dict(line.split(": ", 1) for line in lines[1:])
    seed = bytes(range(32))
    key_id = format_key_id(derive_key_id(bytes(SigningKey(seed).verify_key)))
    target = "https://riverside.example:8443/peer/v1/packages"
    headers = {"Content-Type": "application/json", "Content-Digest": content_digest(body)}
    signed = sign_request(
        "POST",
        target,
        headers,
        key_id=key_id,
        private_key=seed,
        created=1789461000,
        nonce="Qm9vdHN0cmFwTm9uY2UxMg",
    )
    assert shown == {
        "Host": "riverside.example:8443",
        "Content-Length": str(len(body)),
        **headers,
        **signed,
    }
    base = signature_base_for("POST", target, shown, shown["Signature-Input"], "sig1")
    assert base.decode() + "\n" == base_text
    verified = verify_request(
        "POST",
        target,
        shown,
        public_key_for=lambda _: bytes(SigningKey(seed).verify_key),
        now=1789461000,
    )
    assert verified.key_id == key_id == "AF3B5A1511B827D3"
    assert content_digest(b"") in doc


_SF_ALPHABET = st.sampled_from('sig1=()";:,-?*@ \tabcdefxyz0123456789+/.\\\u00e9')


@settings(max_examples=400, deadline=None)
@given(st.text(_SF_ALPHABET, max_size=200), st.text(_SF_ALPHABET, max_size=120))
def test_arbitrary_headers_are_refused_cleanly(sig_input: str, sig: str) -> None:
    """Whatever the headers hold, the answer is a HandoverError (never a crash)."""
    headers = {**_signed(), "Signature-Input": sig_input, "Signature": sig}
    with pytest.raises((MalformedSignatureError, BadSignatureError)):
        _verify(headers)
    try:
        parse_content_digest(sig_input)
    except MalformedSignatureError:
        pass


@settings(max_examples=50, deadline=None)
@given(
    st.sampled_from(["GET", "HEAD", "POST", "PATCH", "PUT"]),
    st.text(st.sampled_from("abcXYZ019-._~/"), max_size=40),
    st.binary(max_size=256),
    st.integers(min_value=0, max_value=10**12),
)
def test_any_signed_request_round_trips(method: str, path: str, body: bytes, created: int) -> None:
    target = "https://riverside.example/peer/v1/" + path
    headers = _signed(method, target, body, created=created)
    verified = _verify(headers, method, target, now=created)
    assert verified.created == created
    check_digest(headers["Content-Digest"], _hashed(body).digest())
