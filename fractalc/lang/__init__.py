"""The language layer: `.fr` text in, IR graphs out.

- `syntax`: the lark LALR grammar and the AST (frozen dataclasses with positions);
- `parser_cache`: the built parser tables, cached per user (rebuilt when the grammar changes);
- `resolve`: imports (inside the import roots), names, arity, base cases;
- `formatter`: the canonical layout (`fractalc fmt`), comments kept;
- `expand`: the evaluator that turns a resolved spec into an IR graph (with a size guard).

It sits on the IR layer (primitive names come from the op table) and below the compiler.
"""
