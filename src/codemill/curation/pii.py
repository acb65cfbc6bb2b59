"""PII and secrets redaction: emails, public IP addresses, keys/tokens and passwords.

Keys and tokens use the patterns of detect-secrets' regex plugins (AWS, GitHub, GitLab, Slack,
Stripe, private keys, JWTs, ...), taken from the installed package so they stay maintained
upstream. We run them over the whole text in one pass instead of calling `scan_line` per line:
measured here, `scan_line` costs ~1 ms a line (40 KB/s), far too slow for a corpus, and its
entropy plugins flag most hex literals in code. Emails and IPs are validated (the `ipaddress`
module decides what is public) so loopback, private and documentation addresses, version strings
and example.com-style addresses stay.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from codemill.curation.text import ascii_bytes, ascii_class_runs, ascii_class_table, finditer_on_lines, line_spans

EMAIL = "EMAIL"
IP_ADDRESS = "IP_ADDRESS"
KEY = "KEY"
PASSWORD = "PASSWORD"
PLACEHOLDERS = {EMAIL: "<EMAIL>", IP_ADDRESS: "<IP_ADDRESS>", KEY: "<KEY>", PASSWORD: "<PASSWORD>"}

# Emails are found from their '@' (a fast literal scan), then the local part is read backwards.
_EMAIL_DOMAIN_RE = re.compile(r"@((?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24})(?![\w-])")
_EMAIL_LOCAL_RE = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}$")
_EXAMPLE_DOMAINS = re.compile(
    r"(?:^|\.)(?:example\.(?:com|org|net|edu)|test|invalid|localhost|local|example|domain\.com|email\.com)$",
    re.IGNORECASE,
)
_IPV4_RE = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w.]|\.\d)")
_IPV6_RE = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_VERSION_BEFORE = re.compile(r"\b(?:version|ver|v|release|rev)[\s=:\"']*$", re.IGNORECASE)
_PASSWORD_KEYWORDS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "apikey",
    "api_key",
    "accesskey",
    "access_key",
    "authtoken",
    "auth_token",
    "privatekey",
    "private_key",
)
_PASSWORD_RE = re.compile(
    r"(?i)(?:password|passwd|pwd|secret|api_?key|access_?key|auth_?token|private_?key)[\w-]*"
    r"[\"']?\s*(?::=|=|:|=>)\s*([\"'])([^\"'\s]{6,200})\1"
)
# user:password@ in a URL. detect-secrets' BasicAuthDetector has this pattern too, but its
# passwords rarely hold a 16-character token, so the token-line gate would skip them.
_URL_PASSWORD_RE = re.compile(r"://[^\s:@/\"'<>]+:([^\s:@/\"'<>]{3,})@")
_PEM_PRIVATE_KEY_RE = re.compile(
    r"-----BEGIN[A-Z ]*PRIVATE KEY( BLOCK)?-----.*?-----END[A-Z ]*PRIVATE KEY( BLOCK)?-----", re.DOTALL
)
# Lines worth the secret patterns: a 16+ character token with a digit in it, or a PEM header.
# Every token/key format in detect-secrets has one; the rest of a file is skipped, which makes
# the scan ~10x faster on code (measured on apache_beam/pipeline.py).
_TOKEN_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_=-"
_TOKEN_TABLE = ascii_class_table(_TOKEN_CHARS)
_DIGIT_TABLE = ascii_class_table(b"0123456789")
# Necessary conditions, cheap to scan for: the IP regexes run only on the lines they flag.
_IPV4_HINT_RE = re.compile(r"\.\d{1,3}\.\d{1,3}\.")
_IPV6_HINT_RE = re.compile(r"::|:[0-9A-Fa-f]{1,4}:")
_PLACEHOLDER_VALUES = re.compile(
    r"^(?:<[^>]*>|\$\{?.*|%\(?.*|\{\{.*|x+|\*+|\.+|changeme|password|secret|example.*|your[_-].*|none|null|true|false)$",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=1)
def _secret_patterns() -> tuple[re.Pattern, ...]:
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.base import RegexBasedDetector

    patterns: list[re.Pattern] = []
    plugin: Any
    for secret_type, plugin in sorted(get_mapping_from_secret_type_to_class().items()):
        # IPs are handled below with public/private validation.
        if not issubclass(plugin, RegexBasedDetector) or "IP" in secret_type:
            continue
        patterns.extend(plugin.denylist)
    return tuple(patterns)


def _literal_prefix(pattern: re.Pattern) -> str:
    """The characters every match of a case-sensitive pattern starts with ("" when it starts with
    anything else, or when the parser is not there: it is `re`'s own, private, since 3.11)."""
    if pattern.flags & re.IGNORECASE:
        return ""
    try:
        from re import _parser  # type: ignore[attr-defined]  # private, but the parser is what we need

        prefix = []
        for op, value in _parser.parse(pattern.pattern, pattern.flags):
            if op is not _parser.LITERAL:
                break
            prefix.append(chr(value))
        return "".join(prefix)
    except Exception:  # another Python's internals: no gate, the pattern always runs
        return ""


@functools.lru_cache(maxsize=1)
def _prefixed_secret_patterns() -> tuple[tuple[re.Pattern, str], ...]:
    return tuple((pattern, _literal_prefix(pattern)) for pattern in _secret_patterns())


def _patterns_for(text: str, candidates: list[tuple[int, int]]) -> list[re.Pattern]:
    """The secret patterns that can match on the candidate lines: a pattern with a literal prefix
    (AccountKey=, glptt-, BEGIN RSA PRIVATE KEY, ... 25 of detect-secrets' 45) only if the prefix
    occurs there. A match lies inside its line, prefix included, so this is exact; it saves calling
    each of those patterns on every candidate line."""
    region = "\n".join(text[start:end] for start, end in candidates)
    return [pattern for pattern, prefix in _prefixed_secret_patterns() if not prefix or prefix in region]


def _key_spans(text: str, candidates: list[tuple[int, int]], patterns: list[re.Pattern]) -> list[tuple[int, int, str]]:
    spans = []
    for line_start, line_end in candidates:
        for pattern in patterns:
            for match in pattern.finditer(text, line_start, line_end):
                start, end = _value_span(match)
                if end - start >= 8:
                    spans.append((start, end, KEY))
    return spans


@dataclass(frozen=True)
class Redaction:
    text: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _is_public_ip(candidate: str) -> bool:
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    if address.version == 4 and any(part.startswith("0") and part != "0" for part in candidate.split(".")):
        return False  # zero-padded octets are dates/versions, not addresses
    return address.is_global and not address.is_multicast


def _candidate_lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of the lines that may hold a key or token: those with a run of 16+ characters
    of [A-Za-z0-9+/_=-] holding a digit. Found by bytes searches (`ascii_bytes`), not a regex
    trying every position."""
    data = ascii_bytes(text)
    runs = [m.span() for m in ascii_class_runs(data.translate(_TOKEN_TABLE), 16)]
    if runs:
        digits = data.translate(_DIGIT_TABLE)
        runs = [(start, end) for start, end in runs if digits.find(b"a", start, end) >= 0]
    spans = line_spans(text, runs)
    position = text.find("-----BEGIN")
    if position >= 0:
        spans.append((position, len(text)))  # PEM blocks span lines: scan from the header on
    return spans


def _value_span(match: re.Match) -> tuple[int, int]:
    """The secret inside a match: the last group long enough to be one, else the whole match."""
    for group in range(match.lastindex or 0, 0, -1):
        start, end = match.span(group)
        if end - start >= 8:
            return start, end
    return match.span()


def find_pii(text: str) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, type) spans to redact, in text order."""
    spans: list[tuple[int, int, str]] = []
    if "://" in text:
        for match in _URL_PASSWORD_RE.finditer(text):
            if not _PLACEHOLDER_VALUES.match(match.group(1)):
                spans.append((match.start(1), match.end(1), PASSWORD))
    if "PRIVATE KEY" in text:
        spans.extend((m.start(), m.end(), KEY) for m in _PEM_PRIVATE_KEY_RE.finditer(text))
    candidates = _candidate_lines(text)
    if candidates:
        spans.extend(_key_spans(text, candidates, _patterns_for(text, candidates)))
    lower = text.lower()
    for keyword in _PASSWORD_KEYWORDS:
        position = lower.find(keyword)
        while position >= 0:
            found = _PASSWORD_RE.match(text, position)
            if found and not _PLACEHOLDER_VALUES.match(found.group(2)):
                spans.append((found.start(2), found.end(2), PASSWORD))
            position = lower.find(keyword, position + len(keyword))
    for match in _EMAIL_DOMAIN_RE.finditer(text):
        local = _EMAIL_LOCAL_RE.search(text, max(0, match.start() - 64), match.start())
        if local and not _EXAMPLE_DOMAINS.search(match.group(1)):
            spans.append((local.start(), match.end(), EMAIL))
    for match in finditer_on_lines(_IPV4_RE, _IPV4_HINT_RE, text):
        if match.start() and (text[match.start() - 1].isalnum() or text[match.start() - 1] in "._"):
            continue
        before = text[max(0, match.start() - 12) : match.start()]
        if _is_public_ip(match.group()) and not _VERSION_BEFORE.search(before):
            spans.append((match.start(), match.end(), IP_ADDRESS))
    for match in finditer_on_lines(_IPV6_RE, _IPV6_HINT_RE, text):
        if match.group().count(":") >= 2 and _is_public_ip(match.group()):
            spans.append((match.start(), match.end(), IP_ADDRESS))
    # Where spans overlap keep the earliest; at the same start a secret beats an email or IP
    # (user:pass@host reads as an email too), then the longest.
    spans.sort(key=lambda s: (s[0], s[2] not in (KEY, PASSWORD), -(s[1] - s[0])))
    result: list[tuple[int, int, str]] = []
    for span in spans:
        if result and span[0] < result[-1][1]:
            continue
        result.append(span)
    return result


def redact(text: str) -> Redaction:
    spans = find_pii(text)
    if not spans:
        return Redaction(text, {})
    pieces: list[str] = []
    position = 0
    for start, end, kind in spans:
        pieces.append(text[position:start])
        pieces.append(PLACEHOLDERS[kind])
        position = end
    pieces.append(text[position:])
    return Redaction("".join(pieces), dict(Counter(kind for _, _, kind in spans)))
