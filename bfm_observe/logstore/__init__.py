"""Embedded Loki-compatible log store (issue 6).

``logql`` parses the supported LogQL subset into an AST and is the public API (the AST lives
in ``logql_ast``, the tokenizer in ``logql_lexer``, the parser in ``logql_parser``);
``logql_eval`` evaluates it over log entries, with the same results as Loki on the same data.
Both are pure: no I/O, no clocks.
"""
