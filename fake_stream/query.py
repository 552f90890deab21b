"""The part of X's search query language the fake evaluates, for recent search.

Grammar (X's "Build a query": a space is AND, AND binds tighter than ``OR``, so
``a OR b c`` is ``a OR (b c)``; ``-`` negates the term or group right after it)::

    query := or              or  := and ("OR" and)*
    and   := unary unary*    unary := "-" unary | "(" or ")" | term
    term  := keyword | "quoted phrase" | lang:xx | from:user | other operators

Keywords and phrases match the tweet's text, tokenized: case-folded runs of letters, digits
and underscores (a keyword that holds punctuation, ``don't``, is the phrase of its tokens).
``lang:`` matches the tweet's language, ``from:`` its author's username (or numeric id).
The operators the fake cannot evaluate (``is:``, ``has:``, ``to:``, ``url:``, ...,
``#hashtag``, ``@mention``, ``$cashtag``) parse and match nothing: its tweets have no
entities, replies or media, so for most of them "nothing" is the truth.

Lenient on purpose: X refuses a query made only of conjunction-required operators
(``lang:en``); the fake takes one, because the filtered stream's default rule is exactly
that (``lang:en OR lang:es OR ...``) and a poller should be able to ask search for what the
stream sends. Strict as X: at most :data:`MAX_QUERY` characters (X's self-serve limit for
recent search), at least one term that is not negated, no unknown ``name:`` operator.

Matching is vectorised: a tweet's text and author are picks from the
:class:`~fake_stream.tweets.TweetFactory` pools, so each term is a boolean vector over a
pool, computed once per query, and a batch of tweets is matched by indexing those vectors.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MAX_DEPTH",
    "MAX_QUERY",
    "And",
    "Compiled",
    "Matcher",
    "Node",
    "Not",
    "Or",
    "Pools",
    "QueryError",
    "Term",
    "parse",
    "tokens",
]

#: X's query length limit for recent search at the self-serve access levels.
MAX_QUERY = 512
#: Deepest nesting of groups and negations: the parser recurses, the stack is finite.
MAX_DEPTH = 32
#: Operators X has that the fake parses but cannot evaluate (they match nothing).
UNEVALUATED = frozenset(
    {
        "is", "has", "to", "url", "retweets_of", "context", "entity", "conversation_id",
        "place", "place_country", "point_radius", "bounding_box", "list",
        "in_reply_to_tweet_id", "retweets_of_tweet_id", "quotes_of_tweet_id",
    }
)  # fmt: skip
_WORD = re.compile(r"\w+")
_OPERATOR = re.compile(r"([a-z_]+):(.*)", re.DOTALL)
_LANG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})?")
_USER = re.compile(r"@?([A-Za-z0-9_]{1,15})")


def tokens(text: str) -> tuple[str, ...]:
    """How text is tokenized for keywords and phrases: case-folded ``\\w`` runs."""
    return tuple(_WORD.findall(text.casefold()))


class QueryError(ValueError):
    """A query that does not parse; ``position`` is 1-based, as X reports it."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at position {position})")
        self.position = position


@dataclass(frozen=True)
class Term:
    """One term: ``kind`` is keyword, phrase, lang, from or unevaluated."""

    kind: str
    value: str  # as written: the keyword, the phrase, the operator's value (casefolded)


@dataclass(frozen=True)
class Not:
    child: Node


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


Node = Term | Not | And | Or


# Parsing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tok:
    kind: str  # "(", ")", "-", "OR", "phrase", "word"
    text: str
    at: int  # 1-based position


def _lex(query: str) -> list[_Tok]:
    out, i, n = [], 0, len(query)
    while i < n:
        c = query[i]
        if c.isspace():
            i += 1
        elif c in "()":
            out.append(_Tok(c, c, i + 1))
            i += 1
        elif c == '"':
            end = query.find('"', i + 1)
            if end < 0:
                raise QueryError("Unterminated quoted phrase", i + 1)
            out.append(_Tok("phrase", query[i + 1 : end], i + 1))
            i = end + 1
        elif c == "-":
            if i + 1 >= n or query[i + 1].isspace() or query[i + 1] == ")":
                raise QueryError("'-' must be followed by a term or a group", i + 1)
            out.append(_Tok("-", c, i + 1))
            i += 1
        else:
            j = i
            while j < n and not query[j].isspace() and query[j] not in '()"':
                j += 1
            word = query[i:j]
            out.append(_Tok("OR" if word == "OR" else "word", word, i + 1))
            i = j
    return out


class _Parser:
    def __init__(self, query: str) -> None:
        self.toks = _lex(query)
        self.i = 0
        self.end = len(query) + 1

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def at(self) -> int:
        tok = self.peek()
        return tok.at if tok is not None else self.end

    def parse_or(self, depth: int) -> Node:
        children = [self.parse_and(depth)]
        while (tok := self.peek()) is not None and tok.kind == "OR":
            self.i += 1
            children.append(self.parse_and(depth))
        return children[0] if len(children) == 1 else Or(tuple(children))

    def parse_and(self, depth: int) -> Node:
        children = [self.parse_unary(depth)]
        while (tok := self.peek()) is not None and tok.kind not in ("OR", ")"):
            children.append(self.parse_unary(depth))
        return children[0] if len(children) == 1 else And(tuple(children))

    def parse_unary(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise QueryError(f"Groups and negations nest deeper than {MAX_DEPTH}", self.at())
        tok = self.peek()
        if tok is None:
            raise QueryError("Expected a term", self.end)
        self.i += 1
        if tok.kind == "-":
            return Not(self.parse_unary(depth + 1))
        if tok.kind == "(":
            if (inner := self.peek()) is not None and inner.kind == ")":
                raise QueryError("Empty group", inner.at)
            node = self.parse_or(depth + 1)
            close = self.peek()
            if close is None or close.kind != ")":
                raise QueryError("Missing ')' to close a group", self.at())
            self.i += 1
            return node
        if tok.kind in (")", "OR"):
            raise QueryError(f"Unexpected '{tok.text}'", tok.at)
        if tok.kind == "phrase":
            if not tok.text.strip():
                raise QueryError("Empty quoted phrase", tok.at)
            return Term("phrase", tok.text)
        return _term(tok)


def _term(tok: _Tok) -> Term:
    word = tok.text
    if len(word) > 1 and word[0] in "#@$":
        return Term("unevaluated", word)
    operator = _OPERATOR.fullmatch(word)
    if operator is None:
        return Term("keyword", word)
    name, value = operator.groups()
    if not value:
        raise QueryError(f"Operator '{name}:' needs a value", tok.at)
    if name == "lang":
        if _LANG.fullmatch(value) is None:
            raise QueryError(f"'{value}' is not a language code", tok.at)
        return Term("lang", value.casefold())
    if name == "from":
        user = _USER.fullmatch(value)
        if user is None:
            raise QueryError(f"'{value}' is not a username or user id", tok.at)
        return Term("from", user.group(1).casefold())
    if name in UNEVALUATED:
        return Term("unevaluated", word)
    raise QueryError(f"Reference to invalid operator '{name}'", tok.at)


def _has_positive(node: Node, negated: bool = False) -> bool:
    if isinstance(node, Term):
        return not negated
    if isinstance(node, Not):
        return _has_positive(node.child, not negated)
    return any(_has_positive(child, negated) for child in node.children)


def parse(query: str) -> Node:
    """The query's tree; :class:`QueryError` naming the position of what is wrong."""
    if len(query) > MAX_QUERY:
        raise QueryError(f"Query is longer than {MAX_QUERY} characters", MAX_QUERY + 1)
    parser = _Parser(query)
    if not parser.toks:
        raise QueryError("Empty query", 1)
    node = parser.parse_or(0)
    if (tok := parser.peek()) is not None:  # only a stray ')' stops parse_or early
        raise QueryError(f"Unexpected '{tok.text}'", tok.at)
    if not _has_positive(node):
        raise QueryError("A query must contain a term that is not negated", 1)
    return node


# Matching -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pools:
    """What terms are matched against: text ``i`` is ``texts[i]`` in ``langs[i]``; user
    ``j`` is ``usernames[j]`` with id ``user_ids[j]``."""

    texts: Sequence[str]
    langs: Sequence[str]
    usernames: Sequence[str]
    user_ids: Sequence[str]


class Compiled:
    """One query, matched against batches of (text pick, user pick) pairs."""

    def __init__(self, node: Node, vectors: dict[Term, tuple[int, np.ndarray]]) -> None:
        self.node = node
        self._vectors = vectors
        # Whether any pair can match (a query that cannot, ``#tag``, needs no scan): every
        # text against every user, as a broadcast grid, never a list of 4 million pairs.
        texts = max((len(v) for axis, v in vectors.values() if axis == 0), default=1)
        users = max((len(v) for axis, v in vectors.values() if axis == 1), default=1)
        grid = self(np.arange(texts)[:, None], np.arange(users)[None, :])
        self.possible = bool(grid.any())

    def __call__(self, text_of: np.ndarray, user_of: np.ndarray) -> np.ndarray:
        """Per pair (``text_of[k]``, ``user_of[k]``), whether the query matches it."""
        picks = (text_of, user_of)
        shape = np.broadcast_shapes(text_of.shape, user_of.shape)

        def evaluate(node: Node) -> np.ndarray:
            if isinstance(node, Term):
                axis, vector = self._vectors[node]
                return vector[picks[axis]] if axis >= 0 else np.zeros(shape, bool)
            if isinstance(node, Not):
                return ~evaluate(node.child)
            combine = np.logical_and if isinstance(node, And) else np.logical_or
            return functools.reduce(combine, (evaluate(child) for child in node.children))

        return np.broadcast_to(evaluate(self.node), shape)


class Matcher:
    """Compiles queries against one set of pools; keeps the last few compiled."""

    def __init__(self, pools: Pools, keep: int = 64) -> None:
        self._text_tokens = [tokens(text) for text in pools.texts]
        self._text_sets = [set(t) for t in self._text_tokens]
        self._langs = np.array([lang.casefold() for lang in pools.langs])
        self._usernames = np.array([name.casefold() for name in pools.usernames])
        self._user_ids = np.array(list(pools.user_ids))
        self._keep = keep
        self._compiled: OrderedDict[str, Compiled] = OrderedDict()

    def compile(self, query: str) -> Compiled:
        """The query parsed and compiled (:class:`QueryError` if it does not parse)."""
        compiled = self._compiled.get(query)
        if compiled is None:
            node = parse(query)
            vectors = {term: self._vector(term) for term in _terms(node)}
            compiled = self._compiled[query] = Compiled(node, vectors)
            if len(self._compiled) > self._keep:
                self._compiled.popitem(last=False)
        self._compiled.move_to_end(query)
        return compiled

    def _vector(self, term: Term) -> tuple[int, np.ndarray]:
        """``(axis, vector)``: axis 0 over texts, 1 over users, -1 matches nothing."""
        if term.kind == "lang":
            return 0, self._langs == term.value
        if term.kind == "from":
            return 1, (self._usernames == term.value) | (self._user_ids == term.value)
        if term.kind == "unevaluated":
            return -1, np.zeros(0, bool)
        wanted = tokens(term.value)
        if not wanted:  # only punctuation: no token to match
            return 0, np.zeros(len(self._text_sets), bool)
        if len(wanted) == 1:
            return 0, np.array([wanted[0] in s for s in self._text_sets], bool)
        return 0, np.array([_contains(t, wanted) for t in self._text_tokens], bool)


def _contains(haystack: tuple[str, ...], needle: tuple[str, ...]) -> bool:
    """Whether ``needle`` occurs in ``haystack`` as a contiguous run of tokens."""
    n = len(needle)
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def _terms(node: Node) -> set[Term]:
    if isinstance(node, Term):
        return {node}
    if isinstance(node, Not):
        return _terms(node.child)
    return set().union(*(_terms(child) for child in node.children))
