"""How one page of a search is found: an adaptive choice of the index that drives the scan.

Results are always in image-id order (keyset pagination on the id), whatever the plan; only the
path to the first ``limit + 1`` matching ids changes. A filter can drive a page in three ways:

* *ordered drivers* deliver ids in id order, so the scan stops after the page is full:
  ``collection_images(collection_id, image_id)``, ``annotations(label_id, is_current, image_id,
  ...)`` and ``(status, is_current, image_id, ...)`` (covering: index-only), ``images(instrument,
  id)``, ``images(station, id)``, and SQLite's FTS5 table (rowid order);
* *range drivers* (captured_at, depth, lat/lon, a PostgreSQL GIN text index) find every match of
  their filter, which is then sorted by id: cheap when the filter matches few rows, ruinous at
  10k+;
* the *walk*: the primary key in id order with every filter checked per row: cheap when the
  filters together match often (1 % of rows: ~5,000 rows for a page of 50).

Neither planner gets this right on its own: SQLite (built without STAT4) cannot estimate ranges,
and PostgreSQL misjudges ``LIKE '%word%'`` and label sub-selects. So ``page_ids`` asks the data:
a *capped count* per indexed filter (``SELECT count(*) FROM (... LIMIT 5000)``, index-only, about
a millisecond) finds the filters that match few rows. Then

1. a filter with fewer than ``SMALL`` matches drives (at most ``SMALL`` rows are touched);
   FTS5 is counted to ``TEXT_CAP`` only (it yields ~15 us per match), and a PostgreSQL GIN text
   index, which cannot stop early, is trusted when the word has trigrams that the index's
   statistics do not list as common (see ``text_index.common_trigrams``);
2. otherwise the first ordered driver (in ``ORDERED`` preference) drives: it stops at a full
   page;
3. otherwise the walk runs over a window of ``WINDOW`` ids after the cursor, and if the page is
   not full there, the best remaining driver finishes it from the window's end.

On SQLite every filter that should *not* drive is written as ``+column`` (which SQLite never
matches to an index), so the chosen driver is the only index the planner can pick. PostgreSQL
gets the same query shapes and keeps its own (statistics-based) choice inside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (ARRAY, Select, Text, and_, exists, func, literal, literal_column, or_,
                        select, table, type_coerce)
from sqlalchemy.orm import Session

from aqualens.catalog.tables import Annotation, CollectionImage, Image, User
from aqualens.catalog.users import visible

SMALL = 5000       # a filter with fewer matches than this drives the page (touches < SMALL rows)
TEXT_CAP = 100     # FTS5 yields ~15 us per match: count only this far
WINDOW = 20000     # ids walked before falling back to a driver

# Ordered drivers, by preference on a tie; "text" is the SQLite FTS5 table read in rowid order.
ORDERED = ("label", "status", "collection", "station", "instrument", "text")


def like_pattern(word: str) -> str:
    """``%word%`` with LIKE wildcards in ``word`` escaped (escape character ``/``)."""
    return "%" + word.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"


def trigrams(word: str) -> list[str]:
    """The distinct 3-character substrings of ``word`` (as the PostgreSQL array index holds)."""
    return sorted({word[i:i + 3] for i in range(len(word) - 2)})


@dataclass
class Filters:
    """The resolved filters of one query (names already looked up)."""

    sqlite: bool
    user: User | None
    collection_id: int | None = None
    label_id: int | None = None
    status: str | None = None
    annotations: bool = False            # label or status given
    captured_from: Any = None
    captured_to: Any = None
    bbox: tuple[float, float, float, float] | None = None
    depth_min: float | None = None
    depth_max: float | None = None
    instrument: str | None = None
    station: str | None = None
    words: list[str] = field(default_factory=list)
    text_index: str | None = None        # fts5 / trgm / garr / None
    common_grams: frozenset[str] = frozenset()   # garr: trigrams in > 0.5 % of rows

    @property
    def rare_grams(self) -> dict[str, list[str]]:
        """garr: per word of 3+ characters, its trigrams that are not common (may be empty)."""
        out = {}
        for w in self.words:
            grams = [g for g in trigrams(w) if g not in self.common_grams]
            if len(w) >= 3 and grams:
                out[w] = grams
        return out

    # -- conditions --------------------------------------------------------------------------

    def col(self, name: str, driver: str | None, own: str) -> Any:
        """``images.<name>``, or ``+images.<name>`` on SQLite unless ``own`` is the driver."""
        column = getattr(Image, name)
        if not self.sqlite or driver == own:
            return column
        return type_coerce(literal_column(f"+images.{name}"), column.type)

    def column_conds(self, driver: str | None) -> dict[str, list[Any]]:
        """Conditions on ``images`` columns per filter; on SQLite only the driver's columns may
        use an index."""
        c = self.col
        out: dict[str, list[Any]] = {}
        if self.captured_from is not None:
            out.setdefault("captured", []).append(
                c("captured_at", driver, "captured") >= self.captured_from)
        if self.captured_to is not None:
            out.setdefault("captured", []).append(
                c("captured_at", driver, "captured") <= self.captured_to)
        if self.bbox is not None:
            min_lon, min_lat, max_lon, max_lat = self.bbox
            lon = c("lon", driver, "bbox")
            out["bbox"] = [c("lat", driver, "bbox").between(min_lat, max_lat),
                           lon.between(min_lon, max_lon) if min_lon <= max_lon
                           else or_(lon >= min_lon, lon <= max_lon)]  # across the antimeridian
        if self.depth_min is not None:
            out.setdefault("depth", []).append(c("depth", driver, "depth") >= self.depth_min)
        if self.depth_max is not None:
            out.setdefault("depth", []).append(c("depth", driver, "depth") <= self.depth_max)
        if self.instrument is not None:
            out["instrument"] = [c("instrument", driver, "instrument") == self.instrument]
        if self.station is not None:
            out["station"] = [c("station", driver, "station") == self.station]
        return out

    def image_conds(self, driver: str | None) -> list[Any]:
        """Every condition on ``images``: visibility, column filters, free text."""
        out: list[Any] = []
        vis = visible(Image, self.user)
        if vis is not True:
            out.append(vis)
        for conds in self.column_conds(driver).values():
            out += conds
        if self.words:
            if driver == "text" and self.text_index == "trgm":
                out.append(text_condition(self.words, "trgm"))
            elif driver == "text" and self.text_index == "garr":
                out.append(text_condition(self.words, "garr", self.rare_grams))
            else:  # checked row by row (fts5: page_query joins the FTS table itself)
                out.append(text_condition(self.words, None))
        return out

    def ann_conds(self) -> list[Any]:
        """Conditions on one annotation row: current, label, status (not rejected unless asked
        for), visible."""
        out: list[Any] = [Annotation.is_current.is_(True)]
        if self.label_id is not None:
            out.append(Annotation.label_id == self.label_id)
        out.append(Annotation.status == self.status if self.status is not None
                   else Annotation.status != "rejected")
        vis = visible(Annotation, self.user)
        if vis is not True:
            out.append(vis)
        return out

    def ann_exists(self, image_id: Any) -> Any:
        return exists(select(literal(1)).select_from(Annotation)
                      .where(Annotation.image_id == image_id, *self.ann_conds()))

    def coll_exists(self, image_id: Any) -> Any:
        return exists(select(literal(1)).select_from(CollectionImage)
                      .where(CollectionImage.collection_id == self.collection_id,
                             CollectionImage.image_id == image_id))

    # -- drivers -----------------------------------------------------------------------------

    def drivers(self) -> list[str]:
        out = []
        if self.collection_id is not None:
            out.append("collection")
        if self.label_id is not None:
            out.append("label")
        elif self.status is not None:
            out.append("status")
        for name in ("instrument", "station"):
            if getattr(self, name) is not None:
                out.append(name)
        if self.captured_from is not None or self.captured_to is not None:
            out.append("captured")
        if self.depth_min is not None or self.depth_max is not None:
            out.append("depth")
        if self.bbox is not None:
            out.append("bbox")
        if self.text_index == "garr" and self.rare_grams or \
                self.text_index in ("fts5", "trgm") and any(len(w) >= 3 for w in self.words):
            out.append("text")  # garr: only with rare trigrams, else the index cannot help
        return out

    def probe(self, driver: str) -> Select | None:
        """A query whose rows are the index entries of ``driver`` (for capped counts); None
        where an index cannot stop early (a PostgreSQL GIN bitmap)."""
        one = literal(1)
        if driver == "collection":
            return select(one).select_from(CollectionImage).where(
                CollectionImage.collection_id == self.collection_id)
        if driver == "label":
            return select(one).select_from(Annotation).where(
                Annotation.label_id == self.label_id, Annotation.is_current.is_(True))
        if driver == "status":
            return select(one).select_from(Annotation).where(
                Annotation.status == self.status, Annotation.is_current.is_(True))
        if driver == "text":
            if self.text_index != "fts5":
                return None
            return select(literal_column("rowid")).select_from(table("images_fts")).where(
                literal_column("images_fts.search_text").like("%" + self.longest_word() + "%"))
        return select(one).select_from(Image).where(*self.column_conds(driver)[driver])

    def longest_word(self) -> str:
        return max(self.words, key=len)


def text_condition(words: list[str], index: str | None,
                   grams: dict[str, list[str]] | None = None) -> Any:
    """Every word occurs in ``search_text`` (name + metadata), case-insensitive substring.

    The exact test runs on every candidate row; with ``index`` set, a text index (see
    text_index.py) narrows the candidates first for words of 3+ characters. Rows without
    ``search_text`` fall back to the original name. ``grams`` (garr): the trigrams to ask the
    index for, per word (default: all of them; a word without any is checked exactly only).
    """
    conds = []
    for w in words:
        pattern = like_pattern(w)
        exact = or_(func.lower(Image.search_text).like(pattern, escape="/"),
                    and_(Image.search_text.is_(None),
                         func.lower(Image.original_name).like(pattern, escape="/")))
        if index == "trgm" and len(w) >= 3:
            # Alone (not inside the OR above) so PostgreSQL can use the pg_trgm GIN index.
            conds.append(and_(func.lower(Image.search_text).like(pattern, escape="/"), exact))
        elif index == "garr" and len(w) >= 3 and (grams is None or grams.get(w)):
            # The built-in GIN array index over aqualens_trigrams(search_text) (text_index.py).
            has = func.aqualens_trigrams(Image.search_text).op("@>")(
                literal(grams[w] if grams else trigrams(w), ARRAY(Text)))
            conds.append(and_(has, exact))
        elif index == "fts5" and len(w) >= 3:
            # The trigram table answers LIKE itself; unescaped wildcards only widen the
            # candidate set, which ``exact`` then trims.
            fts = literal_column("images_fts.search_text")
            cand = select(literal_column("rowid")).select_from(table("images_fts")).where(
                fts.like("%" + w + "%"))
            conds.append(and_(Image.id.in_(cand), exact))
        else:
            conds.append(exact)
    return and_(*conds)


def capped_count(session: Session, q: Select, cap: int) -> int:
    return int(session.scalar(select(func.count()).select_from(q.limit(cap).subquery())) or 0)


def page_query(f: Filters, driver: str | None, after: int | None, upto: int | None,
               need: int) -> Select:
    """The ids (in id order, at most ``need``) of matches with ``after < id <= upto``, scanned
    from ``driver``'s index (None: the primary key)."""
    if driver == "collection":
        key = CollectionImage.image_id
        q = (select(key).select_from(CollectionImage)
             .join(Image, Image.id == CollectionImage.image_id)
             .where(CollectionImage.collection_id == f.collection_id))
        if f.annotations:
            q = q.where(f.ann_exists(key))
    elif driver in ("label", "status"):
        key = Annotation.image_id
        q = (select(key).select_from(Annotation).join(Image, Image.id == Annotation.image_id)
             .where(*f.ann_conds()).group_by(key))
        if f.collection_id is not None:
            q = q.where(f.coll_exists(key))
    elif driver == "text" and f.text_index == "fts5":
        # FTS5 yields rowids in ascending order and honours rowid bounds: an ordered driver.
        key = literal_column("images_fts.rowid")
        q = (select(Image.id).select_from(table("images_fts")).join(Image, Image.id == key)
             .where(literal_column("images_fts.search_text").like(
                 "%" + f.longest_word() + "%")))
        if f.collection_id is not None:
            q = q.where(f.coll_exists(Image.id))
        if f.annotations:
            q = q.where(f.ann_exists(Image.id))
    else:
        key = Image.id
        q = select(key)
        if f.collection_id is not None:
            q = q.where(f.coll_exists(key))
        if f.annotations:
            q = q.where(f.ann_exists(key))
    q = q.where(*f.image_conds(driver))
    if after is not None:
        q = q.where(key > after)
    if upto is not None:
        q = q.where(key <= upto)
    return q.order_by(key).limit(need)


@dataclass
class Choice:
    """What ``choose`` decided (kept for tests and the bench's explanations)."""

    first: str | None                   # driver of the first query (None: windowed walk)
    then: str | None                    # driver after an unfilled window (None: plain walk)
    counts: dict[str, int]


def choose(session: Session, f: Filters) -> Choice:
    """Pick the driver(s) for ``f`` from capped counts (see the module docstring)."""
    counts: dict[str, int] = {}
    small: list[str] = []
    unknown: list[str] = []
    for d in f.drivers():
        if d == "text" and f.text_index == "garr":
            # A GIN bitmap cannot stop early, so no capped count: the statistics say instead.
            # Rare trigrams (left after dropping the common ones) bound the candidates.
            small.append(d)
            continue
        q = f.probe(d)
        if q is None:
            unknown.append(d)
            continue
        cap = TEXT_CAP if d == "text" else SMALL
        counts[d] = capped_count(session, q, cap)
        if counts[d] < cap:
            small.append(d)
    if small:
        return Choice(min(small, key=lambda d: counts.get(d, -1)), None, counts)
    # Every filter matches many rows: an ordered driver stops at a full page (on a tie, the
    # first of ORDERED: label and collection sets are usually the tighter ones).
    ordered = [d for d in ORDERED if d in counts]
    if ordered and not unknown:
        return Choice(ordered[0], None, counts)
    # The walk first (a window); then the index that cannot count (pg_trgm), an ordered
    # driver, or the smallest range.
    then = unknown[0] if unknown else ordered[0] if ordered else \
        min(counts, key=lambda d: counts[d]) if counts else None
    return Choice(None, then, counts)


def page_ids(session: Session, f: Filters, after: int | None, need: int) -> tuple[list[int],
                                                                                 Choice]:
    """The first ``need`` matching ids after ``after``, in id order."""
    choice = choose(session, f)
    if choice.first is not None:
        return list(session.scalars(page_query(f, choice.first, after, None, need))), choice
    start = after or 0
    upto = start + WINDOW
    ids = list(session.scalars(page_query(f, None, after, upto, need)))
    if len(ids) >= need:
        return ids, choice
    ids += session.scalars(page_query(f, choice.then, upto, None, need - len(ids)))
    return ids, choice
