"""Strict compilation of FHIRPath expressions for the policy escape hatch.

fhirpathpy's own parser recovers from syntax errors silently (``foo bar`` parses
as ``foo``), so a typo in a policy would only show up as an always-empty
criterion. We parse once more with an error listener that raises and insist
the whole expression is consumed, so bad expressions fail at load time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from typing import Callable

import fhirpathpy
from antlr4 import CommonTokenStream
from antlr4 import InputStream
from antlr4 import Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy.models import models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser


class _Raise(ErrorListener):
    def syntaxError(self, recognizer, offending_symbol, line, column, msg, e):  # noqa: N802 (ANTLR API)
        raise ValueError(f"FHIRPath syntax error at column {column + 1}: {msg}")


@dataclass(frozen=True)
class CompiledFhirPath:
    source: str
    function: Callable[..., list[Any]]

    def __call__(self, resource: dict, variables: dict[str, Any]) -> list[Any]:
        return self.function(resource, variables)

    def __str__(self) -> str:
        return self.source


def compile_fhirpath(expression: str) -> CompiledFhirPath:
    """Compile *expression* for the R4 model, raising ValueError on any syntax error."""
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_Raise())
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(_Raise())
    parser.expression()
    if parser.getCurrentToken().type != Token.EOF:
        raise ValueError(f"FHIRPath expression has trailing text at '{parser.getCurrentToken().text}'")
    return CompiledFhirPath(expression, fhirpathpy.compile(expression, models["r4"]))
