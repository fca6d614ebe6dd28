"""The sandbox's own SOQL subset: tokenizer, parser and evaluator.

Not shared with the product's SOQL builder on purpose: this side follows Salesforce's
documented grammar and errors so the product's queries are checked against an independent
reading of the rules.

Supported::

    SELECT f1, f2, Rel.f3 | COUNT() | COUNT(f) [alias]
    FROM Object
    [WHERE cond]  cond := expr (AND expr)* | expr (OR expr)*   (mixing needs parentheses)
                  expr := NOT expr | ( cond ) | field op value | field [NOT] IN (v, ...) | field LIKE 'p%'
                  op   := = != <> < <= > >=
                  value:= 'string' | number | 2026-01-01 | 2026-01-01T00:00:00Z | TRUE | FALSE | NULL
                          | TODAY | YESTERDAY | TOMORROW | LAST_N_DAYS:n | NEXT_N_DAYS:n | N_DAYS_AGO:n
                          | THIS_MONTH | LAST_MONTH
    [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...] [LIMIT n] [OFFSET n]

Errors are raised as :class:`SoqlError` with Salesforce's error codes (``MALFORMED_QUERY``,
``INVALID_FIELD``, ``INVALID_TYPE``, ``INVALID_QUERY_FILTER_OPERATOR``,
``NUMBER_OUTSIDE_VALID_RANGE``) and its "ERROR at Row:R:Column:C" message layout.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from sandbox.salesforce.schema import ID_TYPES, STRING_TYPES

if TYPE_CHECKING:
    from sandbox.salesforce.org import Org

MAX_QUERY_LENGTH = 100_000
MAX_WHERE_STRING = 4_000
MAX_OFFSET = 2_000

_KEYWORDS = frozenset({
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "ASC", "DESC", "NULLS",
    "FIRST", "LAST", "LIMIT", "OFFSET", "TRUE", "FALSE", "NULL", "GROUP", "HAVING", "WITH", "FOR", "USING",
    "INCLUDES", "EXCLUDES", "TYPEOF",
})
_ESCAPES = {"n": "\n", "N": "\n", "r": "\r", "R": "\r", "t": "\t", "T": "\t", "b": "\b", "B": "\b",
            "f": "\f", "F": "\f", '"': '"', "'": "'", "\\": "\\"}
_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2})")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?![\dT])")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_OPS = ("!=", "<>", "<=", ">=", "=", "<", ">")
_DATE_KEYWORDS = {"TODAY", "YESTERDAY", "TOMORROW", "THIS_MONTH", "LAST_MONTH"}
_DATE_N_KEYWORDS = {"LAST_N_DAYS", "NEXT_N_DAYS", "N_DAYS_AGO"}


class SoqlError(Exception):
    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


@dataclass
class Token:
    kind: str  # IDENT STRING NUMBER DATE DATETIME OP LPAREN RPAREN COMMA COLON EOF BAD
    value: Any
    pos: int
    raw: str = ""
    like: Any = None  # LIKE pattern pieces (string tokens)

    @property
    def upper(self) -> str:
        return self.value.upper() if self.kind == "IDENT" else ""


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c == "'":
            tokens.append(_string_token(text, i))
            i = tokens[-1].pos + len(tokens[-1].raw)
            if tokens[-1].kind == "BAD":
                break
            continue
        if c == "(":
            tokens.append(Token("LPAREN", "(", i, "("))
            i += 1
            continue
        if c == ")":
            tokens.append(Token("RPAREN", ")", i, ")"))
            i += 1
            continue
        if c == ",":
            tokens.append(Token("COMMA", ",", i, ","))
            i += 1
            continue
        if c == ":":
            tokens.append(Token("COLON", ":", i, ":"))
            i += 1
            continue
        op = next((o for o in _OPS if text.startswith(o, i)), None)
        if op:
            tokens.append(Token("OP", "!=" if op == "<>" else op, i, op))
            i += len(op)
            continue
        if c.isdigit() or (c == "-" and i + 1 < n and text[i + 1].isdigit()):
            for kind, regex in (("DATETIME", _DATETIME_RE), ("DATE", _DATE_RE), ("NUMBER", _NUMBER_RE)):
                match = regex.match(text, i)
                if match:
                    tokens.append(Token(kind, match.group(), i, match.group()))
                    i = match.end()
                    break
            continue
        match = _IDENT_RE.match(text, i)
        if match:
            tokens.append(Token("IDENT", match.group(), i, match.group()))
            i = match.end()
            continue
        tokens.append(Token("BAD", f"unexpected token: '{c}'", i, c))
        break
    tokens.append(Token("EOF", "<EOF>", n))
    return tokens


_STRING_STOP = re.compile(r"['\\]")


def _string_token(text: str, start: int) -> Token:
    """A quoted literal; ``like`` holds (chunk, escaped) pieces to build a LIKE pattern from."""
    out: list[str] = []
    pieces: list[tuple[str, bool]] = []
    j, n = start + 1, len(text)
    while True:
        stop = _STRING_STOP.search(text, j)
        if stop is None:
            return Token("BAD", f"Invalid string literal '{text[start:start + 40]}'. Unterminated string literal.",
                         start, text[start:])
        k = stop.start()
        if k > j:
            out.append(text[j:k])
            pieces.append((text[j:k], False))
        if text[k] == "'":
            return Token("STRING", "".join(out), start, text[start:k + 1], like=pieces)  # type: ignore[arg-type]
        e = text[k + 1] if k + 1 < n else ""
        if e in _ESCAPES:
            ch, j = _ESCAPES[e], k + 2
        elif e == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[k + 2:k + 6] or ""):
            ch, j = chr(int(text[k + 2:k + 6], 16)), k + 6
        elif e in ("_", "%"):
            ch, j = e, k + 2
        else:
            literal = text[start + 1:min(n, k + 2)]
            return Token("BAD", f"Invalid string literal '{literal}'. Illegal character sequence '\\{e}' in "
                                "string literal.", start, text[start:])
        out.append(ch)
        pieces.append((ch, True))


def _like_regex(pieces: list[tuple[str, bool]]) -> str:
    parts = []
    for chunk, escaped in pieces:
        if escaped:
            parts.append(re.escape(chunk))
        else:
            parts.append("".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in chunk))
    return "^" + "".join(parts) + "$"


# -- AST --------------------------------------------------------------------------------
@dataclass
class FieldRef:
    path: list[str]  # canonical names: ["Email"] or ["Owner", "Username"]
    type: str
    label: str  # as displayed: "Email" / "Owner.Username"
    polymorphic: bool = False
    target: str | None = None  # relationship target object (non-polymorphic)

    def getter(self, org: Org) -> Callable[[dict[str, Any]], Any]:
        if len(self.path) == 1:
            name = self.path[0]
            return lambda record: record.get(name)
        path = self.path
        return lambda record: org.resolve(record, path)


@dataclass
class Literal:
    kind: str  # string number date datetime bool null range
    value: Any
    token: Token
    like: Any = None


@dataclass
class Comparison:
    field: FieldRef
    op: str  # = != < <= > >= IN NOT IN LIKE
    values: list[Literal]
    token: Token


@dataclass
class BoolOp:
    op: str  # AND / OR
    items: list[Any]


@dataclass
class Not:
    item: Any


@dataclass
class OrderItem:
    field: FieldRef
    descending: bool
    nulls_last: bool


@dataclass
class Query:
    object: str
    fields: list[FieldRef] = field(default_factory=list)
    count_only: bool = False
    aggregate: tuple[str, FieldRef | None] | None = None  # (alias, field) for COUNT(field)
    where: Any = None
    order: list[OrderItem] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0


class _Parser:
    def __init__(self, text: str, org: Org) -> None:
        self.text = text
        self.org = org
        self.tokens = tokenize(text)
        self.i = 0
        self.obj: Any = None

    # -- helpers -------------------------------------------------------------------
    def error(self, code: str, detail: str, token: Token | None = None) -> SoqlError:
        token = token or self.peek()
        pos = min(token.pos, len(self.text))
        row = self.text.count("\n", 0, pos) + 1
        line_start = self.text.rfind("\n", 0, pos) + 1
        line_end = self.text.find("\n", pos)
        line = self.text[line_start:line_end if line_end >= 0 else len(self.text)]
        col = pos - line_start + 1
        return SoqlError(code, f"\n{line}\n{' ' * (col - 1)}^\nERROR at Row:{row}:Column:{col}\n{detail}")

    def peek(self, offset: int = 0) -> Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def next(self) -> Token:
        token = self.peek()
        self.i += 1
        return token

    def unexpected(self, token: Token | None = None) -> SoqlError:
        token = token or self.peek()
        if token.kind == "BAD":
            return self.error("MALFORMED_QUERY", token.value, token)
        shown = token.raw if token.kind != "EOF" else "<EOF>"
        return self.error("MALFORMED_QUERY", f"unexpected token: '{shown}'", token)

    def keyword(self, word: str) -> bool:
        if self.peek().upper == word:
            self.i += 1
            return True
        return False

    def expect_keyword(self, word: str) -> Token:
        token = self.peek()
        if token.upper != word:
            raise self.unexpected(token)
        return self.next()

    def expect(self, kind: str) -> Token:
        token = self.peek()
        if token.kind != kind:
            raise self.unexpected(token)
        return self.next()

    # -- grammar -------------------------------------------------------------------
    def parse(self) -> Query:
        self.expect_keyword("SELECT")
        start = self.i
        # skip to FROM to learn the object first (field names are checked against it)
        depth = 0
        while True:
            token = self.peek()
            if token.kind == "EOF" or token.kind == "BAD":
                raise self.unexpected(token)
            if token.kind == "LPAREN":
                depth += 1
            elif token.kind == "RPAREN":
                depth -= 1
            elif token.upper == "FROM" and depth == 0:
                break
            elif token.upper == "SELECT":
                raise self.error("MALFORMED_QUERY", "Nested queries (subqueries) are not supported by the sandbox",
                                 token)
            self.i += 1
        from_index = self.i
        self.next()
        object_token = self.expect("IDENT")
        obj = self.org.object(object_token.value)
        if obj is None or not obj.queryable or "." in object_token.value:
            raise self.error(
                "INVALID_TYPE",
                f"sObject type '{object_token.value}' is not supported. If you are attempting to use a custom object, "
                "be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call "
                "for the appropriate names.", object_token)
        self.obj = obj
        query = Query(object=obj.name)
        end = self.i
        self.i = start
        self.select_list(query, from_index)
        self.i = end
        if self.keyword("WHERE"):
            query.where = self.condition()
            self.check_where_strings(query.where)
        for word in ("WITH", "GROUP", "HAVING", "USING"):
            if self.peek().upper == word:
                raise self.error("MALFORMED_QUERY", f"{word} clauses are not supported by the sandbox")
        if self.keyword("ORDER"):
            self.expect_keyword("BY")
            if query.count_only:
                raise self.error("MALFORMED_QUERY", "ORDER BY is not supported with COUNT()")
            query.order = self.order_list()
        if self.keyword("LIMIT"):
            query.limit = int(self.number_token().value)
        if self.keyword("OFFSET"):
            token = self.number_token()
            query.offset = int(token.value)
            if query.offset > MAX_OFFSET:
                raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", f"Maximum SOQL offset allowed is {MAX_OFFSET}")
        if self.peek().upper == "FOR":
            raise self.error("MALFORMED_QUERY", "FOR clauses are not supported by the sandbox")
        if self.peek().kind != "EOF":
            raise self.unexpected()
        if obj.name == "ContentDocumentLink" and not _has_cdl_filter(query.where):
            raise SoqlError("MALFORMED_QUERY",
                            "Implementation restriction: ContentDocumentLink requires a filter by a single Id on "
                            "ContentDocumentId or LinkedEntityId using the equals operator or multiple Id's using the "
                            "IN operator.")
        return query

    def number_token(self) -> Token:
        token = self.peek()
        if token.kind != "NUMBER" or "." in token.value or token.value.startswith("-"):
            raise self.unexpected(token)
        return self.next()

    def select_list(self, query: Query, stop: int) -> None:
        seen: set[str] = set()
        while True:
            token = self.peek()
            if token.upper == "COUNT" and self.peek(1).kind == "LPAREN":
                self.i += 2
                if self.peek().kind == "RPAREN":
                    self.next()
                    if query.fields or self.i != stop:
                        raise self.error("MALFORMED_QUERY", "COUNT() can't be combined with other fields", token)
                    query.count_only = True
                else:
                    ref = self.field_ref(self.expect("IDENT"))
                    self.expect("RPAREN")
                    alias = "expr0"
                    if self.peek().kind == "IDENT" and self.i < stop:
                        alias = self.next().value
                    if query.fields or self.i != stop:
                        raise self.error("MALFORMED_QUERY", "Field must be grouped or aggregated", token)
                    query.aggregate = (alias, ref)
            elif token.kind == "IDENT" and token.upper not in _KEYWORDS - {"FIRST", "LAST"}:
                if token.upper == "TYPEOF":
                    raise self.error("MALFORMED_QUERY", "TYPEOF is not supported by the sandbox", token)
                if query.count_only or query.aggregate:
                    raise self.error("MALFORMED_QUERY", "Field must be grouped or aggregated", token)
                self.next()
                if self.peek().kind == "LPAREN":
                    raise self.error("MALFORMED_QUERY", f"Function {token.value}() is not supported by the sandbox",
                                     token)
                ref = self.field_ref(token)
                if ref.label.lower() in seen:
                    raise self.error("MALFORMED_QUERY", f"duplicate field selected: {ref.label}", token)
                seen.add(ref.label.lower())
                query.fields.append(ref)
            else:
                raise self.unexpected(token)
            if self.i == stop:
                return
            if self.peek().kind != "COMMA":
                raise self.unexpected()
            self.next()
            if self.i == stop:
                raise self.unexpected()

    def field_ref(self, token: Token) -> FieldRef:
        parts = token.value.split(".")
        if len(parts) > 1 and parts[0].lower() == self.obj.name.lower():
            parts = parts[1:]
        if len(parts) == 1:
            f = self.obj.field(parts[0])
            if f is None:
                raise self.error(
                    "INVALID_FIELD",
                    f"No such column '{parts[0]}' on entity '{self.obj.name}'. If you are attempting to use a custom "
                    "field, be sure to append the '__c' after the custom field name. Please reference your WSDL or "
                    "the describe call for the appropriate names.", token)
            return FieldRef([f.name], f.type, f.name)
        target = self.org.relationship_target(self.obj.name, parts[0]) if len(parts) == 2 else None
        if target is None:
            raise self.error(
                "INVALID_FIELD",
                f"Didn't understand relationship '{parts[0]}' in field path. If you are attempting to use a custom "
                "relationship, be sure to append the '__r' after the custom relationship name. Please reference your "
                "WSDL or the describe call for the appropriate names.", token)
        rel, fields = target
        name = next((n for n in fields if n.lower() == parts[1].lower()), None)
        if name is None:
            entity = rel.reference_to[0] if not rel.polymorphic else "Name"
            raise self.error(
                "INVALID_FIELD",
                f"No such column '{parts[1]}' on entity '{entity}'. If you are attempting to use a custom field, be "
                "sure to append the '__c' after the custom field name. Please reference your WSDL or the describe "
                "call for the appropriate names.", token)
        assert rel.relationship_name is not None
        return FieldRef([rel.relationship_name, name], fields[name], f"{rel.relationship_name}.{name}",
                        polymorphic=rel.polymorphic, target=None if rel.polymorphic else rel.reference_to[0])

    def condition(self) -> Any:
        items = [self.unary()]
        op = None
        while self.peek().upper in ("AND", "OR"):
            token = self.next()
            if op is not None and token.upper != op:
                raise self.unexpected(token)
            op = token.upper
            items.append(self.unary())
        return items[0] if op is None else BoolOp(op, items)

    def unary(self) -> Any:
        if self.keyword("NOT"):
            return Not(self.unary())
        if self.peek().kind == "LPAREN":
            self.next()
            node = self.condition()
            self.expect("RPAREN")
            return node
        return self.comparison()

    def comparison(self) -> Comparison:
        token = self.peek()
        if token.kind != "IDENT" or token.upper in _KEYWORDS:
            raise self.unexpected(token)
        self.next()
        ref = self.field_ref(token)
        f = self.obj.field(ref.path[0]) if len(ref.path) == 1 else None
        if f is not None and not f.filterable:
            raise self.error("INVALID_FIELD", f"field '{f.name}' can not be filtered in a query call", token)
        op_token = self.peek()
        if op_token.upper == "NOT" and self.peek(1).upper == "IN":
            self.i += 2
            op = "NOT IN"
        elif op_token.upper == "IN":
            self.next()
            op = "IN"
        elif op_token.upper == "LIKE":
            self.next()
            op = "LIKE"
        elif op_token.upper in ("INCLUDES", "EXCLUDES"):
            raise self.error("MALFORMED_QUERY", f"{op_token.upper} is not supported by the sandbox", op_token)
        elif op_token.kind == "OP":
            self.next()
            op = op_token.value
        else:
            raise self.unexpected(op_token)
        if op in ("IN", "NOT IN"):
            self.expect("LPAREN")
            if self.peek().upper == "SELECT":
                raise self.error("MALFORMED_QUERY", "Semi-join subselects are not supported by the sandbox")
            values = [self.value()]
            while self.peek().kind == "COMMA":
                self.next()
                values.append(self.value())
            self.expect("RPAREN")
        else:
            values = [self.value()]
        comparison = Comparison(ref, op, values, token)
        self.check_types(comparison)
        return comparison

    def value(self) -> Literal:
        token = self.next()
        if token.kind == "STRING":
            return Literal("string", token.value, token, like=token.like)
        if token.kind == "NUMBER":
            return Literal("number", float(token.value), token)
        if token.kind == "DATE":
            try:
                return Literal("date", date.fromisoformat(token.value).isoformat(), token)
            except ValueError:
                raise self.error("MALFORMED_QUERY", f"line 1:{token.pos} no viable alternative at character "
                                 f"'{token.value}'", token) from None
        if token.kind == "DATETIME":
            from sandbox.salesforce.org import format_datetime, parse_datetime

            try:
                return Literal("datetime", format_datetime(parse_datetime(token.value)), token)
            except ValueError:
                raise self.unexpected(token) from None
        word = token.upper
        if word in ("TRUE", "FALSE"):
            return Literal("bool", word == "TRUE", token)
        if word == "NULL":
            return Literal("null", None, token)
        if word in _DATE_KEYWORDS:
            return Literal("range", self.date_range(word, 0), token)
        if word in _DATE_N_KEYWORDS:
            self.expect("COLON")
            days = int(self.number_token().value)
            return Literal("range", self.date_range(word, days), token)
        self.i -= 1
        raise self.unexpected(token)

    def date_range(self, word: str, n: int) -> tuple[date, date]:
        today = self.org.today()
        one = timedelta(days=1)
        if word == "TODAY":
            return today, today + one
        if word == "YESTERDAY":
            return today - one, today
        if word == "TOMORROW":
            return today + one, today + 2 * one
        if word == "LAST_N_DAYS":
            return today - n * one, today + one
        if word == "NEXT_N_DAYS":
            return today + one, today + (n + 1) * one
        if word == "N_DAYS_AGO":
            return today - n * one, today - (n - 1) * one
        first = today.replace(day=1)
        if word == "THIS_MONTH":
            nxt = (first + 32 * one).replace(day=1)
            return first, nxt
        previous = (first - one).replace(day=1)
        return previous, first

    def check_types(self, comparison: Comparison) -> None:
        ref = comparison.field
        t = ref.type
        for lit in comparison.values:
            if lit.kind == "null":
                if comparison.op not in ("=", "!=", "IN", "NOT IN"):
                    raise self.error("MALFORMED_QUERY", "null can only be used with = or !=", lit.token)
                continue
            if comparison.op == "LIKE":
                if t in ID_TYPES:
                    raise self.error("INVALID_QUERY_FILTER_OPERATOR", "invalid operator on id field", lit.token)
                if t not in STRING_TYPES or lit.kind != "string":
                    raise self.error("INVALID_QUERY_FILTER_OPERATOR",
                                     f"invalid operator on field '{ref.label}' (LIKE works on text fields)", lit.token)
                continue
            if t in STRING_TYPES:
                if lit.kind != "string":
                    raise self.error("INVALID_FIELD", f"value of filter criterion for field '{ref.label}' must be of "
                                     "type string and should be enclosed in quotes", lit.token)
            elif t in ID_TYPES:
                from sandbox.salesforce.org import is_id, normalize_id

                if lit.kind != "string":
                    raise self.error("INVALID_FIELD", f"value of filter criterion for field '{ref.label}' must be of "
                                     "type id and should be enclosed in quotes", lit.token)
                if not is_id(lit.value):
                    raise self.error("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {lit.value}", lit.token)
                lit.value = normalize_id(lit.value)
            elif t == "boolean":
                if lit.kind != "bool":
                    raise self.error("INVALID_FIELD", f"value of filter criterion for field '{ref.label}' must be of "
                                     "type boolean and should not be enclosed in quotes", lit.token)
            elif t in ("date", "datetime"):
                want = "date" if t == "date" else "dateTime"
                if lit.kind not in (t, "range"):
                    raise self.error("INVALID_FIELD", f"value of filter criterion for field '{ref.label}' must be of "
                                     f"type {want} and should not be enclosed in quotes", lit.token)
                if lit.kind == "range":
                    start, end = lit.value
                    if t == "date":
                        lit.value = (start.isoformat(), end.isoformat())
                    else:
                        from sandbox.salesforce.org import datetime_bounds

                        lit.value = datetime_bounds(start, (end - start).days, self.org.settings.time_zone)
            elif t in ("int", "double"):
                if lit.kind != "number":
                    raise self.error("INVALID_FIELD", f"value of filter criterion for field '{ref.label}' must be of "
                                     f"type {'double' if t == 'double' else 'integer'} and should not be enclosed in "
                                     "quotes", lit.token)
            else:
                raise self.error("INVALID_FIELD", f"field '{ref.label}' can not be filtered in a query call",
                                 lit.token)
            if lit.kind == "range" and comparison.op in ("IN", "NOT IN"):
                raise self.error("MALFORMED_QUERY", "date literals can't be used in IN lists", lit.token)

    def check_where_strings(self, node: Any) -> None:
        if isinstance(node, Comparison):
            for lit in node.values:
                if lit.kind == "string" and len(lit.value) > MAX_WHERE_STRING:
                    raise self.error("MALFORMED_QUERY",
                                     f"String too long: strings in a WHERE clause can't exceed {MAX_WHERE_STRING:,} "
                                     "characters", lit.token)
        elif isinstance(node, BoolOp):
            for item in node.items:
                self.check_where_strings(item)
        elif isinstance(node, Not):
            self.check_where_strings(node.item)

    def order_list(self) -> list[OrderItem]:
        items = []
        while True:
            token = self.expect("IDENT")
            ref = self.field_ref(token)
            f = self.obj.field(ref.path[0]) if len(ref.path) == 1 else None
            if f is not None and not f.sortable:
                raise self.error("INVALID_FIELD", f"field '{f.name}' can not be sorted in a query call", token)
            descending = False
            if self.keyword("DESC"):
                descending = True
            else:
                self.keyword("ASC")
            nulls_last = descending
            if self.keyword("NULLS"):
                if self.keyword("LAST"):
                    nulls_last = True
                else:
                    self.expect_keyword("FIRST")
                    nulls_last = False
            items.append(OrderItem(ref, descending, nulls_last))
            if self.peek().kind != "COMMA":
                return items
            self.next()


def _has_cdl_filter(node: Any) -> bool:
    def ok(item: Any) -> bool:
        return (isinstance(item, Comparison) and item.field.path[0] in ("ContentDocumentId", "LinkedEntityId")
                and item.op in ("=", "IN") and len(item.field.path) == 1)

    if ok(node):
        return True
    return isinstance(node, BoolOp) and node.op == "AND" and any(ok(item) for item in node.items)


def parse(text: str, org: Org) -> Query:
    if len(text) > MAX_QUERY_LENGTH:
        raise SoqlError("MALFORMED_QUERY",
                        f"SOQL statements cannot be longer than {MAX_QUERY_LENGTH:,} characters.")
    if not text.strip():
        raise SoqlError("MALFORMED_QUERY", "unexpected token: '<EOF>'")
    return _Parser(text, org).parse()


# -- evaluation -----------------------------------------------------------------------------
def _compile(node: Any, org: Org) -> Callable[[dict[str, Any]], bool]:
    if isinstance(node, BoolOp):
        parts = [_compile(item, org) for item in node.items]
        if len(parts) == 2:
            first, second = parts
            if node.op == "AND":
                return lambda record: first(record) and second(record)
            return lambda record: first(record) or second(record)
        if node.op == "AND":
            return lambda record: all(p(record) for p in parts)
        return lambda record: any(p(record) for p in parts)
    if isinstance(node, Not):
        inner = _compile(node.item, org)
        return lambda record: not inner(record)
    return _compile_comparison(node, org)


def _compile_comparison(node: Comparison, org: Org) -> Callable[[dict[str, Any]], bool]:
    get = node.field.getter(org)
    t = node.field.type
    text = t in STRING_TYPES

    def norm(value: Any) -> Any:
        if value is None:
            return None
        if text:
            return str(value).lower()
        if t in ("int", "double"):
            return float(value)
        return value

    op = node.op
    if len(node.field.path) == 1 and text and op in ("=", "IN", "NOT IN", "!=") \
            and all(lit.kind == "string" for lit in node.values):
        name = node.field.path[0]
        wanted_text = {str(lit.value).lower() for lit in node.values}
        if op in ("=", "IN"):
            return lambda record: (v := record.get(name)) is not None and v.lower() in wanted_text
        return lambda record: (v := record.get(name)) is None or v.lower() not in wanted_text
    if op == "LIKE":
        regex = re.compile(_like_regex(node.values[0].like or []), re.IGNORECASE | re.DOTALL)
        return lambda record: (v := get(record)) is not None and regex.match(str(v)) is not None
    if op in ("IN", "NOT IN"):
        wanted = {norm(lit.value) for lit in node.values}
        if op == "IN":
            return lambda record: norm(get(record)) in wanted
        return lambda record: norm(get(record)) not in wanted
    lit = node.values[0]
    if lit.kind == "range":
        start, end = lit.value

        def in_range(record: dict[str, Any]) -> bool:
            v = get(record)
            return v is not None and start <= v < end

        tests: dict[str, Callable[[dict[str, Any]], bool]] = {
            "=": in_range,
            "!=": lambda record: not in_range(record),
            "<": lambda record: (v := get(record)) is not None and v < start,
            "<=": lambda record: (v := get(record)) is not None and v < end,
            ">": lambda record: (v := get(record)) is not None and v >= end,
            ">=": lambda record: (v := get(record)) is not None and v >= start,
        }
        return tests[op]
    target = norm(lit.value)
    if op == "=":
        return lambda record: norm(get(record)) == target
    if op == "!=":
        return lambda record: norm(get(record)) != target
    compare = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
               ">=": lambda a, b: a >= b}[op]
    return lambda record: (v := norm(get(record))) is not None and target is not None and compare(v, target)


@dataclass
class Result:
    total_size: int
    records: list[dict[str, Any]]


def execute(query: Query, org: Org, *, include_deleted: bool = False, version: str = "59.0") -> Result:
    with org.lock:
        predicate = _compile(query.where, org) if query.where is not None else None
        rows = [r for r in org._iter_records(query.object, include_deleted) if predicate is None or predicate(r)]
        if query.count_only:
            total = len(rows) if query.limit is None else min(len(rows), query.limit)
            return Result(total, [])
        if query.aggregate is not None:
            alias, ref = query.aggregate
            if ref is not None:
                get = ref.getter(org)
                rows = [r for r in rows if get(r) is not None]
            return Result(1, [{"attributes": {"type": "AggregateResult"}, alias: len(rows)}])
        for item in reversed(query.order):
            get = item.field.getter(org)
            is_text = item.field.type in STRING_TYPES
            present = [r for r in rows if get(r) is not None]
            missing = [r for r in rows if get(r) is None]
            present.sort(key=lambda r: (str(get(r)).lower() if is_text else get(r)), reverse=item.descending)
            rows = present + missing if item.nulls_last else missing + present
        rows = rows[query.offset:]
        if query.limit is not None:
            rows = rows[:query.limit]
        return Result(len(rows), [_project(query, row, org, version) for row in rows])


def _project(query: Query, record: dict[str, Any], org: Org, version: str) -> dict[str, Any]:
    object_name = "TaskWhoRelation" if query.object == "TaskWhoRelation" else query.object
    out: dict[str, Any] = {"attributes": {"type": object_name,
                                          "url": org.record_url(object_name, record["Id"], version)}}
    for ref in query.fields:
        if len(ref.path) == 1:
            value = record.get(ref.path[0])
            if ref.path[0] == "VersionData" and value:
                value = value.replace("/v59.0/", f"/v{version}/")
            out[ref.path[0]] = value
            continue
        rel_name, field_name = ref.path
        lookup = org.object(query.object)
        assert lookup is not None
        rel = lookup.relationship(rel_name)
        ref_id = record.get(rel.name) if rel else None
        found = org.get(ref_id) if ref_id else None
        if found is None:
            out[rel_name] = None
            continue
        target_name, target = found
        nested = out.get(rel_name)
        if not isinstance(nested, dict):
            nested = {"attributes": {"type": "Name" if ref.polymorphic else target_name,
                                     "url": org.record_url(target_name, target["Id"], version)}}
            out[rel_name] = nested
        nested[field_name] = target_name if field_name == "Type" and ref.polymorphic else target.get(field_name)
    return out
