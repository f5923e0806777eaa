"""Keep tldextract off the network.

Presidio's ``EmailRecognizer`` calls ``tldextract.extract``, a thin wrapper over the module
global ``tldextract.tldextract.TLD_EXTRACTOR``. That default extractor, on first use, reads a
cache under ``~/.cache`` and, failing that, *downloads the public suffix list* over HTTPS
(``suffix_list.find_first_response``), logging tracebacks when it cannot.

An extractor built with ``suffix_list_urls=()`` and ``cache_dir=None`` cannot: in tldextract
5.4, ``DiskCache(None)`` is disabled, so ``get_suffix_lists`` calls ``_get_suffix_lists``
directly; ``find_first_response`` loops over zero URLs (it only builds a ``requests.Session``,
which opens no connection) and raises ``SuffixListNotFound``; with ``fallback_to_snapshot``
(the default) the bundled ``.tld_set_snapshot`` is read with ``pkgutil.get_data``. No socket,
no cache file. ``tests/gateway/pii/test_offline.py`` checks this with an audit hook.

llmos's e-mail recognizer is handed its own offline extractor; ``install_offline_extractor``
also replaces the module global, so any other caller in the process (another Presidio
recognizer, a stock ``AnalyzerEngine``) is offline too. The PII engine calls it when it is
built, never at import time.
"""

from __future__ import annotations

import threading

import tldextract
import tldextract.tldextract

_lock = threading.Lock()
_extractor: tldextract.TLDExtract | None = None


def offline_extractor() -> tldextract.TLDExtract:
    """A new extractor over the bundled public suffix snapshot: no HTTP, no disk cache."""
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


def install_offline_extractor() -> tldextract.TLDExtract:
    """Make ``tldextract.extract`` offline for the whole process (idempotent); return the extractor."""
    global _extractor
    with _lock:
        if _extractor is None or tldextract.tldextract.TLD_EXTRACTOR is not _extractor:
            _extractor = offline_extractor()
            tldextract.tldextract.TLD_EXTRACTOR = _extractor
        return _extractor
