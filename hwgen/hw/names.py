"""Legal identifiers for generated C++ and Verilog.

Every name that reaches a generated file passes through `legalize`, and every comment that
quotes an original (ONNX) name passes through `comment_safe`. A model's names are untrusted input.
"""

from __future__ import annotations

import hashlib
import re

_CPP_KEYWORDS = {
    "alignas", "alignof", "and", "and_eq", "asm", "auto", "bitand", "bitor", "bool", "break", "case", "catch",
    "char", "char8_t", "char16_t", "char32_t", "class", "compl", "concept", "const", "consteval", "constexpr",
    "constinit", "const_cast", "continue", "co_await", "co_return", "co_yield", "decltype", "default", "delete",
    "do", "double", "dynamic_cast", "else", "enum", "explicit", "export", "extern", "false", "float", "for",
    "friend", "goto", "if", "inline", "int", "long", "mutable", "namespace", "new", "noexcept", "not", "not_eq",
    "nullptr", "operator", "or", "or_eq", "private", "protected", "public", "register", "reinterpret_cast",
    "requires", "return", "short", "signed", "sizeof", "static", "static_assert", "static_cast", "struct",
    "switch", "template", "this", "thread_local", "throw", "true", "try", "typedef", "typeid", "typename",
    "union", "unsigned", "using", "virtual", "void", "volatile", "wchar_t", "while", "xor", "xor_eq", "main",
    "std", "hls", "ap_int", "ap_uint", "ap_fixed", "ap_ufixed", "NULL", "assert",
}
_VERILOG_KEYWORDS = {
    "accept_on", "alias", "always", "always_comb", "always_ff", "always_latch", "and", "assert", "assign",
    "assume", "automatic", "before", "begin", "bind", "bins", "binsof", "bit", "break", "buf", "bufif0", "bufif1",
    "byte", "case", "casex", "casez", "cell", "chandle", "checker", "class", "clocking", "cmos", "config", "const",
    "constraint", "context", "continue", "cover", "covergroup", "coverpoint", "cross", "deassign", "default",
    "defparam", "design", "disable", "dist", "do", "edge", "else", "end", "endcase", "endchecker", "endclass",
    "endclocking", "endconfig", "endfunction", "endgenerate", "endgroup", "endinterface", "endmodule",
    "endpackage", "endprimitive", "endprogram", "endproperty", "endspecify", "endsequence", "endtable", "endtask",
    "enum", "event", "eventually", "expect", "export", "extends", "extern", "final", "first_match", "for", "force",
    "foreach", "forever", "fork", "forkjoin", "function", "generate", "genvar", "global", "highz0", "highz1", "if",
    "iff", "ifnone", "ignore_bins", "illegal_bins", "implements", "implies", "import", "incdir", "include",
    "initial", "inout", "input", "inside", "instance", "int", "integer", "interconnect", "interface", "intersect",
    "join", "join_any", "join_none", "large", "let", "liblist", "library", "local", "localparam", "logic",
    "longint", "macromodule", "matches", "medium", "modport", "module", "nand", "negedge", "nettype", "new",
    "nexttime", "nmos", "nor", "noshowcancelled", "not", "notif0", "notif1", "null", "or", "output", "package",
    "packed", "parameter", "pmos", "posedge", "primitive", "priority", "program", "property", "protected", "pull0",
    "pull1", "pulldown", "pullup", "pulsestyle_ondetect", "pulsestyle_onevent", "pure", "rand", "randc",
    "randcase", "randsequence", "rcmos", "real", "realtime", "ref", "reg", "reject_on", "release", "repeat",
    "restrict", "return", "rnmos", "rpmos", "rtran", "rtranif0", "rtranif1", "s_always", "s_eventually",
    "s_nexttime", "s_until", "s_until_with", "scalared", "sequence", "shortint", "shortreal", "showcancelled",
    "signed", "small", "soft", "solve", "specify", "specparam", "static", "string", "strong", "strong0",
    "strong1", "struct", "super", "supply0", "supply1", "sync_accept_on", "sync_reject_on", "table", "tagged",
    "task", "this", "throughout", "time", "timeprecision", "timeunit", "tran", "tranif0", "tranif1", "tri",
    "tri0", "tri1", "triand", "trior", "trireg", "type", "typedef", "union", "unique", "unique0", "unsigned",
    "until", "until_with", "untyped", "use", "uwire", "var", "vectored", "virtual", "void", "wait", "wait_order",
    "wand", "weak", "weak0", "weak1", "while", "wildcard", "wire", "with", "within", "wor", "xnor", "xor",
}
RESERVED = frozenset(_CPP_KEYWORDS | _VERILOG_KEYWORDS)
MAX_LEN = 48
_LEGAL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def legalize(name: str, taken: set[str] | None = None, *, prefix: str = "n") -> str:
    """A safe identifier for `name`: [A-Za-z_][A-Za-z0-9_]*, no keyword, at most 48 chars, unique.

    Runs of other characters become one '_'; a leading digit gets `prefix`; keywords and names
    with a leading/trailing underscore or double underscore (reserved in C++) are prefixed/tidied;
    long names are cut and given a short hash so distinct names stay distinct. When `taken` is
    given, the result is made unique against it (suffix _1, _2, ...) and added to it.
    """
    s = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    if not s:
        s = prefix
    if s[0].isdigit():
        s = f"{prefix}{s}"
    if s.lower() in RESERVED or s.startswith(("ap_", "hls_", "hwgen_")):
        s = f"{prefix}_{s}"
    if len(s) > MAX_LEN:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        s = f"{s[: MAX_LEN - 9].rstrip('_')}_{digest}"
    if taken is not None:
        base, i = s, 1
        while s in taken:
            s = f"{base}_{i}"
            i += 1
        taken.add(s)
    assert _LEGAL.match(s), s  # internal invariant of this function, not user input
    return s


def comment_safe(text: str, limit: int = 80) -> str:
    """Text that is safe inside a // comment of C++ or Verilog: printable ASCII, no line breaks.

    Also removes '*/' and '/*' and backslashes (a trailing backslash continues a C++ comment).
    """
    out = text.encode("ascii", "backslashreplace").decode("ascii")
    out = out.replace("\\", "/").replace("*/", "* /").replace("/*", "/ *")
    out = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in out)
    if len(out) > limit:
        out = out[: limit - 3] + "..."
    return out
