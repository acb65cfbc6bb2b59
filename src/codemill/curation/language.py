"""Language, vendor and generated-file detection with go-enry (GitHub linguist's rules, the detector
The Stack v2 used: extensions, file names, shebangs, modelines and content heuristics for ~700
languages), plus a tree-sitter parse check where tree-sitter-language-pack has the grammar."""

from __future__ import annotations

import functools
import re
import typing
from dataclasses import dataclass

import enry

from codemill.records import LanguageType

# go-enry's vendor rules miss Python's vendoring convention (pip/_vendor, setuptools/_vendor).
_EXTRA_VENDOR_RE = re.compile(r"(?:^|/)_vendor(?:ed)?/")

# linguist names whose tree-sitter grammar is not the lowercased name.
_GRAMMAR_OF = {
    "C++": "cpp",
    "C#": "csharp",
    "F#": "fsharp",
    "Shell": "bash",
    "Objective-C": "objc",
    "Emacs Lisp": "elisp",
    "Common Lisp": "commonlisp",
    "Vim Script": "vim",
    "Makefile": "make",
    "TeX": "latex",
    "reStructuredText": "rst",
    "Protocol Buffer": "proto",
    "Assembly": "asm",
    "Fortran Free Form": "fortran",
    "Linker Script": "linkerscript",
    "Jsonnet": "jsonnet",
    "Git Attributes": "gitattributes",
    "Ignore List": "gitignore",
    "Go Module": "gomod",
    "Go Checksums": "gosum",
    "Cap'n Proto": "capnp",
    "Embedded Ruby": "embeddedtemplate",
    "HTML+ERB": "embeddedtemplate",
    "OCaml": "ocaml",
    "Pip Requirements": "requirements",
    "LLVM": "llvm",
    "Smali": "smali",
    "Gettext Catalog": "po",
    "WebAssembly": "wat",
    "Java Properties": "properties",
    "Text": "",
    "Markdown": "",  # markdown parses anything
}


@dataclass(frozen=True)
class LanguageInfo:
    language: str | None
    language_type: LanguageType | None
    is_vendor: bool
    is_generated: bool


def detect_language(path: str, data: bytes) -> LanguageInfo:
    # enry's content heuristics look at the start of the file; a bounded sample keeps huge files cheap.
    sample = data[: 64 * 1024]
    language = enry.get_language(path.rsplit("/", 1)[-1], sample) or None
    language_type = enry.get_language_type(language) if language else None
    return LanguageInfo(
        language=language,
        language_type=language_type or None,
        is_vendor=bool(enry.is_vendor(path)) or bool(_EXTRA_VENDOR_RE.search(path)),
        is_generated=bool(enry.is_generated(path, sample)),
    )


@functools.lru_cache(maxsize=1)
def _available_grammars() -> frozenset[str]:
    import tree_sitter_language_pack

    return frozenset(typing.get_args(tree_sitter_language_pack.SupportedLanguage))


def grammar_for(language: str | None) -> str | None:
    if not language:
        return None
    grammar = _GRAMMAR_OF.get(language)
    if grammar is None:
        grammar = re.sub(r"[\s\-]+", "", language.lower())
    return grammar if grammar and grammar in _available_grammars() else None


@functools.lru_cache(maxsize=None)
def _parser(grammar: str):
    import tree_sitter_language_pack

    return tree_sitter_language_pack.get_parser(grammar)  # type: ignore[arg-type]


def parse_error_ratio(language: str | None, data: bytes, max_bytes: int = 1 << 20) -> float | None:
    """Share of the bytes that tree-sitter could not parse (inside ERROR nodes; a MISSING node
    counts one byte). None when there is no grammar for the language or the file is larger than
    max_bytes. Clean subtrees are skipped via `has_error`, so clean files cost one parse."""
    grammar = grammar_for(language)
    if grammar is None or not data or len(data) > max_bytes:
        return None
    root = _parser(grammar).parse(data).root_node
    if not root.has_error:
        return 0.0
    error_bytes = 0
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_error:
            error_bytes += node.end_byte - node.start_byte
        elif node.is_missing:
            error_bytes += 1
        elif node.has_error:
            stack.extend(node.children)
    return min(1.0, error_bytes / len(data))
