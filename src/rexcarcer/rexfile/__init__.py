"""The .rex language: lexer, parser, AST. Pure: no I/O beyond reading the file."""
