"""The language layer: `.fr` text in, IR graphs out.

- `syntax`: the lark LALR grammar and the AST (frozen records, `fractalc.records`, with positions);
- `_parser_generated`: the LALR parser, generated from the grammar by scripts/gen_parser.py;
- `parser_cache`: the bundled library's parse, cached per user (keyed by text and grammar);
- `resolve`: imports (inside the import roots), names, arity, base cases;
- `formatter`: the canonical layout (`fractalc fmt`), comments kept;
- `expand`: the evaluator that turns a resolved spec into an IR graph (with a size guard).

It sits on the IR layer (primitive names come from the op table) and below the compiler.
"""
