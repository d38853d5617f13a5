"""Annotations: validation, corrections that supersede, the history chain, delete = reject."""

from __future__ import annotations

import pytest

from aqualens.catalog.annotations import (add_annotation, annotation_history, correct_annotation,
                                          create_annotation, delete_annotation, get_annotation,
                                          list_annotations)
from aqualens.catalog.labels import (create_label, get_or_create_label, resolve_label,
                                     update_label)
from aqualens.catalog.users import create_user, get_admin
from aqualens.core.errors import Conflict, PermissionDenied, ValidationError
from tests.catalog.factory import make_image


@pytest.fixture
def setup(ctx):
    with ctx.session() as s:
        admin = get_admin(s)
        alice = create_user(s, "alice")
        img = make_image(s, alice, collection="c", visibility="public")
        lab = get_or_create_label(s, "Copepoda", 1080)
        other = get_or_create_label(s, "Ostracoda", 1078)
        for o in (admin, alice, img, lab, other):
            s.expunge(o)
    return ctx, admin, alice, img, lab, other


def test_history_chain(setup):
    ctx, admin, alice, img, lab, other = setup
    with ctx.session() as s:
        a = add_annotation(s, img.id, label_id=lab.id, geometry_type="box",
                           geometry=[1, 2, 10, 20], score=0.7, status="predicted",
                           source="model", owner_id=alice.id)
        b = correct_annotation(s, a.id, alice, label_id=other.id)
        assert b.supersedes_id == a.id and b.is_current and not a.is_current
        assert b.status == "validated" and b.source == "human" and b.author_id == alice.id
        assert b.geometry == [1.0, 2.0, 10.0, 20.0]  # unchanged fields are carried over
        c = correct_annotation(s, b.id, alice, geometry=[0, 0, 5, 5])
        with pytest.raises(Conflict) as err:
            correct_annotation(s, a.id, alice, status="dubious")
        assert str(c.id) in str(err.value)
        d = delete_annotation(s, c.id, alice)
        assert d.status == "rejected" and d.supersedes_id == c.id
        assert delete_annotation(s, d.id, alice).id == d.id  # idempotent
        ids = [x.id for x in annotation_history(s, b.id)]
        assert ids == [a.id, b.id, c.id, d.id]
        assert [x.id for x in list_annotations(s, img.id, alice)] == [d.id]
        assert len(list_annotations(s, img.id, alice, history=True)) == 4
        # Anonymous readers see public annotations of a public image
        assert get_annotation(s, a.id, None).id == a.id


def test_permissions(setup):
    ctx, admin, alice, img, lab, _ = setup
    with ctx.session() as s:
        bob = create_user(s, "bob")
        a = create_annotation(s, img.id, alice, label_id=lab.id)
        with pytest.raises(PermissionDenied):
            correct_annotation(s, a.id, bob, status="dubious")
        with pytest.raises(PermissionDenied):
            create_annotation(s, img.id, bob, label_id=lab.id)
        assert correct_annotation(s, a.id, admin, status="dubious").status == "dubious"


@pytest.mark.parametrize(("fields", "field"), [
    ({"geometry_type": "circle"}, "geometry_type"),
    ({"geometry_type": "box", "geometry": [1, 2, 3]}, "geometry"),
    ({"geometry_type": "box", "geometry": [1, 2, -3, 4]}, "geometry"),
    ({"geometry_type": "box", "geometry": [1, 2, "a", 4]}, "geometry"),
    ({"geometry_type": "point", "geometry": [1]}, "geometry"),
    ({"geometry_type": "polygon", "geometry": [[1, 2, 3, 4]]}, "geometry"),
    ({"geometry_type": "polygon", "geometry": [[1, 2, 3, 4, 5]]}, "geometry"),
    ({"geometry_type": "mask", "geometry": {"size": [10], "counts": "x"}}, "geometry"),
    ({"geometry_type": "none", "geometry": [1, 2]}, "geometry"),
    ({"score": 1.5}, "score"),
    ({"score": float("nan")}, "score"),
    ({"status": "maybe"}, "status"),
    ({"source": "oracle"}, "source"),
    ({"label_id": 9999}, "label_id"),
    ({"visibility": "secret"}, "visibility"),
    ({"attributes": [1]}, "attributes"),
])
def test_validation(setup, fields, field):
    ctx, _, alice, img, lab, _ = setup
    kw = {"label_id": lab.id, **fields}
    with ctx.session() as s, pytest.raises(ValidationError) as err:
        add_annotation(s, img.id, owner_id=alice.id, **kw)
    assert err.value.field == field


def test_geometry_shapes_accepted(setup):
    ctx, _, alice, img, lab, _ = setup
    with ctx.session() as s:
        poly = add_annotation(s, img.id, label_id=lab.id, geometry_type="polygon",
                              geometry=[0, 0, 4, 0, 4, 4], owner_id=alice.id)
        assert poly.geometry == [[0.0, 0.0, 4.0, 0.0, 4.0, 4.0]]
        mask = add_annotation(s, img.id, label_id=None, geometry_type="mask",
                              geometry={"size": [24, 32], "counts": [0, 10, 758]},
                              owner_id=alice.id)
        assert mask.geometry["size"] == [24, 32]


def test_labels(ctx):
    with ctx.session() as s:
        admin = get_admin(s)
        root = create_label(s, "Crustacea", aphia_id=1066, rank="Subphylum")
        cope = create_label(s, "Copepoda", aphia_id=1080, parent="Crustacea",
                            synonyms=["copepods"])
        assert cope.parent_id == root.id
        assert resolve_label(s, "COPEPODS").id == cope.id
        assert get_or_create_label(s, "copepoda").id == cope.id
        with pytest.raises(Conflict):
            create_label(s, "copepoda")
        with pytest.raises(ValidationError) as err:
            create_label(s, "X", aphia_id=-3)
        assert err.value.field == "aphia_id"
        with pytest.raises(ValidationError) as err:
            create_label(s, "Y", parent="Nope")
        assert err.value.field == "parent"
        with pytest.raises(ValidationError) as err:
            update_label(s, root.id, admin, parent=cope.id)  # a cycle
        assert err.value.field == "parent"
        alice = create_user(s, "alice")
        with pytest.raises(PermissionDenied):
            update_label(s, root.id, alice, rank="Phylum")
        assert update_label(s, root.id, admin, rank="Phylum").rank == "Phylum"
