"""Catalogue search on SQLite and on a real PostgreSQL: every filter, combinations, keyset
pagination (stable under inserts), facets, visibility, bad input.

One catalogue per backend is built per module (reads only); the expected answer of each query is
computed in Python from the same synthetic attributes, so every filter is checked against an
independent oracle.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from aqualens.catalog.annotations import add_annotation, delete_annotation
from aqualens.catalog.context import Context
from aqualens.catalog.db import get_engine
from aqualens.catalog.text_index import ensure_text_index, text_index_kind
from aqualens.catalog.instance import init_instance
from aqualens.catalog.labels import add_synonym, get_or_create_label
from aqualens.catalog import search_plan
from aqualens.catalog.search import (ImageQuery, count_images, decode_cursor, encode_cursor,
                                     facets, iter_image_ids, plan, search_images)
from aqualens.catalog.search_plan import page_query
from aqualens.catalog.tables import CollectionImage, User
from aqualens.catalog.users import create_user, get_admin
from aqualens.core.config import load_settings
from aqualens.core.errors import ValidationError
from tests.catalog.factory import make_image

N = 24
T0 = datetime(2024, 1, 1, 6, 0, tzinfo=timezone.utc)


def attrs(k: int) -> dict[str, Any]:
    """The synthetic attributes of image ``k`` (also the oracle's view of it)."""
    return {
        "owner": "alice" if k < 20 else "bob",
        "public": k % 2 == 0,
        "collections": (["cruise1"] if k < 10 else ["cruise2"] if k < 20 else ["bobs"])
                       + (["cruise2"] if k in (3, 4) else []),
        "captured_at": T0 + timedelta(days=k),
        "lat": 40 + k * 0.5, "lon": -10.0 + k, "depth": k * 10.0,
        "instrument": "UVP6" if k % 3 == 0 else "ZooScan" if k % 3 == 1 else None,
        "station": f"st{k % 4}",
        "name": f"img_{k:03d}.jpg",
        "meta": {"cruise": "ATL42" if k < 12 else "MED7",
                 **({"note": "Calanus sp. near surface"} if k == 5 else {})},
        # label -> status of the current annotation
        "labels": {**({"Copepoda": "validated"} if k % 2 == 0 else {}),
                   **({"Diatom": "predicted"} if k % 5 == 0 else {}),
                   **({"Copepoda": "rejected"} if k == 7 else {})},
    }


def build(ctx: Context) -> dict[str, Any]:
    """The shared catalogue: 24 images, 3 users, 3 collections, labels with annotations."""
    init_instance(ctx)
    ensure_text_index(get_engine(ctx.db_url))
    ids: dict[int, int] = {}
    with ctx.session() as s:
        admin = get_admin(s)
        users = {"alice": create_user(s, "alice"), "bob": create_user(s, "bob")}
        cope = get_or_create_label(s, "Copepoda", 1080)
        add_synonym(s, cope, "copepods")
        labels = {"Copepoda": cope, "Diatom": get_or_create_label(s, "Diatom", 148899)}
        from aqualens.catalog.collections import get_or_create_collection

        colls = {"cruise1": get_or_create_collection(s, "cruise1", users["alice"],
                                                     visibility="public"),
                 "cruise2": get_or_create_collection(s, "cruise2", users["alice"]),
                 "bobs": get_or_create_collection(s, "bobs", users["bob"])}
        for k in range(N):
            a = attrs(k)
            owner = users[a["owner"]]
            img = make_image(s, owner, visibility="public" if a["public"] else "private",
                             name=a["name"], captured_at=a["captured_at"], lat=a["lat"],
                             lon=a["lon"], depth=a["depth"], instrument=a["instrument"],
                             station=a["station"], meta=a["meta"])
            ids[k] = img.id
            for c in a["collections"]:
                s.add(CollectionImage(collection_id=colls[c].id, image_id=img.id))
            for name, status in a["labels"].items():
                if status == "rejected":
                    continue
                add_annotation(s, img.id, label_id=labels[name].id, status=status,
                               source="import", owner_id=owner.id, author_id=owner.id)
            if "Copepoda" in a["labels"] and a["labels"]["Copepoda"] == "rejected":
                row = add_annotation(s, img.id, label_id=cope.id, status="predicted", score=0.4,
                                     source="model", owner_id=owner.id)
                delete_annotation(s, row.id, owner)
        s.flush()
        user_ids = {"admin": admin.id, "alice": users["alice"].id, "bob": users["bob"].id}
        coll_ids = {k: v.id for k, v in colls.items()}
    return {"ids": ids, "users": user_ids, "collections": coll_ids}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres",
                                                               marks=pytest.mark.postgres)])
def cat(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(ctx, info) of the shared catalogue on each backend."""
    data = tmp_path_factory.mktemp("search") / "data"
    if request.param == "sqlite":
        settings = load_settings(data_dir=data)
    else:
        server = request.getfixturevalue("pg_server")
        name = "search_" + uuid.uuid4().hex[:10]
        server.create_database(name)
        settings = load_settings(data_dir=data, database_url=server.url(name))
    ctx = Context(settings)
    return ctx, build(ctx)


def who(ctx: Context, name: str | None) -> User | None:
    if name is None:
        return None
    with ctx.session() as s:
        from aqualens.catalog.users import get_user

        u = get_user(s, name)
        s.expunge(u)
        return u


def can_see(k: int, user: str | None) -> bool:
    a = attrs(k)
    return a["public"] or user == "admin" or a["owner"] == user


def expected(pred: Callable[[dict[str, Any]], bool], info: dict, user: str | None) -> list[int]:
    return sorted(info["ids"][k] for k in range(N) if can_see(k, user) and pred(attrs(k)))


def run(ctx: Context, query: dict[str, Any], user: str | None = "alice") -> list[int]:
    """All ids over every page, following cursors (limit 5 to cross page boundaries)."""
    u = who(ctx, user)
    out: list[int] = []
    cursor = None
    with ctx.session() as s:
        while True:
            page = search_images(s, ImageQuery.parse({**query, "limit": 5, "cursor": cursor}), u)
            out += [i.id for i in page.items]
            cursor = page.next_cursor
            if cursor is None:
                return out


D = timedelta(days=1)
CASES: list[tuple[str, dict[str, Any], Callable[[dict], bool]]] = [
    ("nothing", {}, lambda a: True),
    ("collection by name", {"collection": "cruise2"}, lambda a: "cruise2" in a["collections"]),
    ("label", {"label": "Copepoda"}, lambda a: a["labels"].get("Copepoda") == "validated"),
    ("label synonym, any case", {"label": "COPEPODS"},
     lambda a: a["labels"].get("Copepoda") == "validated"),
    ("status", {"status": "predicted"}, lambda a: "predicted" in a["labels"].values()),
    ("status rejected", {"status": "rejected"}, lambda a: "rejected" in a["labels"].values()),
    ("label + status", {"label": "Diatom", "status": "validated"}, lambda a: False),
    ("captured range", {"captured_from": (T0 + 3 * D).isoformat(),
                        "captured_to": (T0 + 8 * D).isoformat()},
     lambda a: T0 + 3 * D <= a["captured_at"] <= T0 + 8 * D),
    ("captured_to bare date is inclusive", {"captured_to": "2024-01-05"},
     lambda a: a["captured_at"] < datetime(2024, 1, 6, tzinfo=timezone.utc)),
    ("captured_from with offset", {"captured_from": "2024-01-10T08:00:00+02:00"},
     lambda a: a["captured_at"] >= datetime(2024, 1, 10, 6, tzinfo=timezone.utc)),
    ("bbox", {"bbox": "-8,41,0,45"}, lambda a: -8 <= a["lon"] <= 0 and 41 <= a["lat"] <= 45),
    ("bbox across antimeridian", {"bbox": "10,-90,-9,90"},
     lambda a: a["lon"] >= 10 or a["lon"] <= -9),
    ("depth range", {"depth_min": 35, "depth_max": 120}, lambda a: 35 <= a["depth"] <= 120),
    ("depth_min only", {"depth_min": 200}, lambda a: a["depth"] >= 200),
    ("instrument", {"instrument": "UVP6"}, lambda a: a["instrument"] == "UVP6"),
    ("station", {"station": "st2"}, lambda a: a["station"] == "st2"),
    ("text in name", {"text": "img_01"}, lambda a: "img_01" in a["name"]),
    ("text in metadata, any case", {"text": "atl42"}, lambda a: a["meta"]["cruise"] == "ATL42"),
    ("text two words", {"text": "calanus SURFACE"}, lambda a: "note" in a["meta"]),
    ("text with LIKE wildcards", {"text": "img%0"}, lambda a: False),
    ("text short word", {"text": "7"}, lambda a: "7" in a["name"] or "7" in a["meta"]["cruise"]),
    ("combined", {"collection": "cruise1", "instrument": "UVP6", "depth_max": 80},
     lambda a: "cruise1" in a["collections"] and a["instrument"] == "UVP6" and a["depth"] <= 80),
    ("combined with label and time", {"label": "Copepoda", "captured_from": "2024-01-05",
                                      "station": "st0"},
     lambda a: a["labels"].get("Copepoda") == "validated" and a["station"] == "st0"
     and a["captured_at"] >= datetime(2024, 1, 5, tzinfo=timezone.utc)),
]


@pytest.mark.parametrize(("query", "pred"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_filter(cat, query, pred):
    ctx, info = cat
    assert run(ctx, query) == expected(pred, info, "alice")


@pytest.mark.parametrize(("query", "pred"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_plan_gives_the_same_answer(cat, query, pred):
    """Each way of driving a page (every usable index, and the primary-key walk) pages through
    exactly the oracle's ids, in id order; so whichever plan the capped counts pick, the results
    and the pagination are the same."""
    ctx, info = cat
    want = expected(pred, info, "alice")
    with ctx.session() as s:
        f = plan(s, ImageQuery.parse(query), who(ctx, "alice")).filters
        for driver in [None, *f.drivers()]:
            got: list[int] = []
            after = None
            while True:
                ids = list(s.scalars(page_query(f, driver, after, None, 4)))
                got += ids
                if len(ids) < 4:
                    break
                after = ids[-1]
            assert got == want, driver


@pytest.mark.parametrize("sizes", [(1, 2, 3), (3, 4, 5), (100, 200, 7)],
                         ids=["walk-window-3", "window-5", "drivers"])
def test_adaptive_thresholds_do_not_change_results(cat, monkeypatch, sizes):
    """Tiny thresholds push the 24-image catalogue through the windowed walk and its fallback,
    and through the ordered drivers."""
    small, text_cap, window = sizes
    monkeypatch.setattr(search_plan, "SMALL", small)
    monkeypatch.setattr(search_plan, "TEXT_CAP", text_cap)
    monkeypatch.setattr(search_plan, "WINDOW", window)
    ctx, info = cat
    for _, query, pred in CASES:
        assert run(ctx, query) == expected(pred, info, "alice"), query


class _Everything(frozenset):
    def __contains__(self, item: object) -> bool:
        return True


def test_common_trigrams_make_text_walk(cat, monkeypatch):
    """PostgreSQL without pg_trgm: a word whose trigrams are all common is not searched through
    the GIN index but walked; same answers (on SQLite this runs the usual plans)."""
    from aqualens.catalog import search as search_mod

    monkeypatch.setattr(search_mod, "common_trigrams", lambda session: _Everything())
    monkeypatch.setattr(search_plan, "WINDOW", 3)
    ctx, info = cat
    for _, query, pred in CASES:
        if "text" in query:
            assert run(ctx, query) == expected(pred, info, "alice"), query


def test_init_instance_creates_the_text_index(any_db_url, tmp_path):
    ctx = Context(load_settings(data_dir=tmp_path / "data", database_url=any_db_url))
    init_instance(ctx)
    with ctx.session() as s:
        assert text_index_kind(s) in ("fts5", "trgm", "garr")


@pytest.mark.parametrize("user", [None, "alice", "bob", "admin"])
def test_visibility(cat, user):
    ctx, info = cat
    assert run(ctx, {}, user) == expected(lambda a: True, info, user)
    # An anonymous caller cannot name a private collection.
    if user in (None, "bob"):
        with pytest.raises(ValidationError) as err:
            run(ctx, {"collection": "cruise2"}, user)
        assert err.value.field == "collection"


def test_total_iter_and_count(cat):
    ctx, info = cat
    u = who(ctx, "alice")
    want = expected(lambda a: a["instrument"] == "ZooScan", info, "alice")
    with ctx.session() as s:
        q = ImageQuery(instrument="ZooScan", limit=2, with_total=True)
        page = search_images(s, q, u)
        assert page.total == len(want) and len(page.items) == 2
        assert page.next_cursor is not None
        assert list(iter_image_ids(s, ImageQuery(instrument="ZooScan"), u, batch=3)) == want
        assert count_images(s, ImageQuery(instrument="ZooScan"), u) == len(want)
        # iter_image_ids honours the cursor and the collection path
        ids = list(iter_image_ids(s, ImageQuery(collection="cruise1", cursor=page.next_cursor),
                                  u, batch=2))
        assert ids == [i for i in expected(lambda a: "cruise1" in a["collections"], info,
                                           "alice") if i > decode_cursor(page.next_cursor)]


def test_facets(cat):
    ctx, info = cat
    u = who(ctx, "alice")
    with ctx.session() as s:
        f = facets(s, ImageQuery(collection="cruise1"), u)
    seen = [k for k in range(N) if can_see(k, "alice") and "cruise1" in attrs(k)["collections"]]
    labels = {e["value"]: e["count"] for e in f["label"]}
    assert labels == {"Copepoda": sum(attrs(k)["labels"].get("Copepoda") == "validated"
                                      for k in seen),
                      "Diatom": sum("Diatom" in attrs(k)["labels"] for k in seen)}
    colls = {e["value"]: e["count"] for e in f["collection"]}
    assert colls == {"cruise1": len(seen), "cruise2": 2}
    inst = {e["value"]: e["count"] for e in f["instrument"]}
    assert inst == {i: sum(attrs(k)["instrument"] == i for k in seen) for i in ("UVP6", "ZooScan")}
    # Anonymous: only public images and collections count.
    with ctx.session() as s:
        f = facets(s, ImageQuery(), None)
    assert {e["value"] for e in f["collection"]} == {"cruise1"}
    assert sum(e["count"] for e in f["instrument"]) == sum(
        1 for k in range(N) if attrs(k)["public"] and attrs(k)["instrument"])


BAD = [
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": encode_cursor(5)[:-2] + "!!"}, "cursor"),
    ({"label": "Unicornus"}, "label"),
    ({"collection": "nope"}, "collection"),
    ({"collection": 99999}, "collection"),
    ({"bbox": "1,2,3"}, "bbox"),
    ({"bbox": "a,b,c,d"}, "bbox"),
    ({"bbox": "0,95,1,96"}, "bbox"),
    ({"bbox": "200,0,1,1"}, "bbox"),
    ({"captured_from": "yesterday"}, "captured_from"),
    ({"captured_from": "2024-02-01", "captured_to": "2024-01-01"}, "captured_from"),
    ({"depth_min": "deep"}, "depth_min"),
    ({"depth_min": 50, "depth_max": 10}, "depth_min"),
    ({"status": "great"}, "status"),
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"colour": "red"}, "colour"),
]


@pytest.mark.parametrize(("query", "field"), BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_bad_input_names_the_field(cat, query, field):
    ctx, _ = cat
    with pytest.raises(ValidationError) as err:
        with ctx.session() as s:
            search_images(s, ImageQuery.parse(query), who(ctx, "alice"))
    assert err.value.field == field, err.value


@pytest.fixture
def fresh(any_db_url: str, tmp_path: Path) -> Context:
    ctx = Context(load_settings(data_dir=tmp_path / "data", database_url=any_db_url))
    init_instance(ctx)
    ensure_text_index(get_engine(ctx.db_url))
    return ctx


def test_keyset_pages_stable_under_inserts_and_deletes(fresh):
    ctx = fresh
    with ctx.session() as s:
        admin = get_admin(s)
        first = [make_image(s, admin, collection="c", instrument="X").id for _ in range(9)]
        s.expunge(admin)
    seen: list[int] = []
    with ctx.session() as s:
        page = search_images(s, ImageQuery(instrument="X", limit=4), admin)
        seen += [i.id for i in page.items]
    # Others add matching images and delete one we have not reached yet, mid-pagination.
    with ctx.session() as s:
        added = [make_image(s, admin, collection="c", instrument="X").id for _ in range(3)]
        make_image(s, admin, instrument="Y")
    from aqualens.catalog.images import delete_image

    delete_image(ctx, first[6], admin)
    cursor = page.next_cursor
    while cursor:
        with ctx.session() as s:
            page = search_images(s, ImageQuery(instrument="X", limit=4, cursor=cursor), admin)
            seen += [i.id for i in page.items]
            cursor = page.next_cursor
    assert seen == [i for i in first if i != first[6]] + added
    assert len(set(seen)) == len(seen)
    # The collection path (driven by the membership table) pages the same way.
    with ctx.session() as s:
        ids = []
        cursor = None
        while True:
            page = search_images(s, ImageQuery(collection="c", limit=5, cursor=cursor), admin)
            ids += [i.id for i in page.items]
            cursor = page.next_cursor
            if not cursor:
                break
    assert ids == seen


def test_text_index_in_use_and_same_answers(cat):
    """The index (FTS5 trigram / pg_trgm where available) and the scan agree."""
    ctx, info = cat
    from aqualens.catalog import search as search_mod

    with ctx.session() as s:
        kind = text_index_kind(s)
        if ctx.db_url.startswith("sqlite"):
            assert kind == "fts5"
        for words in (["img_01"], ["atl42"], ["calanus", "surface"], ["7"], ["img%0"]):
            with_index = set(s.scalars(search_mod.select(search_mod.Image.id).where(
                search_mod._text_condition(words, kind))))
            scan = set(s.scalars(search_mod.select(search_mod.Image.id).where(
                search_mod._text_condition(words, None))))
            assert with_index == scan, words


def test_statistics_only_for_a_filled_sqlite_catalogue(tmp_path, monkeypatch):
    """No ANALYZE of an empty catalogue (stale "tiny table" statistics slow bulk loads); one
    sampled ANALYZE once there are images and no statistics."""
    from sqlalchemy import text

    from aqualens.catalog import text_index

    ctx = Context(load_settings(data_dir=tmp_path / "data"))
    init_instance(ctx)
    engine = get_engine(ctx.db_url)

    def stats() -> list:
        with engine.connect() as conn:
            if not conn.execute(text("SELECT 1 FROM sqlite_master WHERE name='sqlite_stat1'")
                                ).first():
                return []
            return conn.execute(text("SELECT idx FROM sqlite_stat1 WHERE tbl='images'")).all()

    assert stats() == []
    with ctx.session() as s:
        admin = get_admin(s)
        for _ in range(3):
            make_image(s, admin, instrument="X")
    monkeypatch.setattr(text_index, "ANALYZE_MIN_ROWS", 3)
    text_index.refresh_statistics(engine)
    assert stats() != []
