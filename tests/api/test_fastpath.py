"""api.fastpath: upload predictions answered in plain ASGI, the same as the FastAPI route."""

from __future__ import annotations

import asyncio

import httpx

from aqualens.api.app import create_app
from aqualens.services import batching
from tests.models.nets import png_bytes, register_classifier


def _route(client, mid: int, files: list, data: dict | None = None):  # noqa: ANN001, ANN202
    """The same request through the FastAPI route: a body of unknown length (chunked) is left
    to it by the fast path."""
    req = httpx.Request("POST", "http://x/", files=files, data=data)
    body = req.read()

    def chunks():  # noqa: ANN202
        yield body
    return client.post(f"/api/v1/models/{mid}/predict", content=chunks(),
                       headers={"Content-Type": req.headers["content-type"]})


def test_fast_path_answers_like_the_route(client, ctx, tmp_path) -> None:  # noqa: ANN001
    mid = register_classifier(ctx, tmp_path)
    files = [("files", ("red.png", png_bytes((250, 0, 0)))),
             ("files", ("green.png", png_bytes((0, 250, 0), 30, 90)))]
    fast = client.post(f"/api/v1/models/{mid}/predict", files=files, data={"top_k": "2"})
    assert fast.status_code == 200, fast.text
    assert any(k[2] == mid for k in batching.running())  # it went through the batcher
    route = _route(client, mid, files, {"top_k": "2"})
    assert route.status_code == 200 and route.json() == fast.json()
    assert fast.json()["model"]["pid"].startswith("sha256:")
    for bad_files, data in (([("files", ("n.txt", b"hello"))], None),
                            (files, {"top_k": "0"}), (files, {"threshold": "2"}),
                            ([("other", ("a.png", png_bytes((1, 2, 3))))], None)):
        a = client.post(f"/api/v1/models/{mid}/predict", files=bad_files, data=data)
        b = _route(client, mid, bad_files, data)
        assert a.status_code == b.status_code and 400 <= a.status_code < 500, a.text
        assert a.json() == b.json()


def test_fast_path_errors(client, anon_client, ctx, tmp_path) -> None:  # noqa: ANN001
    mid = register_classifier(ctx, tmp_path)
    one = {"files": ("a.png", png_bytes((250, 0, 0)))}
    r = client.post("/api/v1/models/ghost/predict", files=one)
    assert r.status_code == 404 and r.json()["field"] == "model"
    r = client.post(f"/api/v1/models/{mid}/predict", files=one,
                    headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = client.post(f"/api/v1/models/{mid}/predict", files=one,
                    headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and r.json()["field"] == "Authorization"
    r = client.post("/api/v1/models/a%00b/predict", files=one)
    assert r.status_code == 422 and "NUL" in r.json()["message"]
    r = anon_client.post(f"/api/v1/models/{mid}/predict", files=one)  # private model
    assert r.status_code == 404
    r = client.post(f"/api/v1/models/{mid}/predict", content=b"--x\r\nbroken",
                    headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 422 and r.json()["field"] == "body"
    ctx.settings.limits.max_file_bytes = 100
    r = client.post(f"/api/v1/models/{mid}/predict", files=one)
    assert r.status_code == 413 and r.json()["field"] == "a.png"


def test_visibility_changes_apply_at_once(client, anon_client, ctx, tmp_path) -> None:  # noqa: ANN001
    mid = register_classifier(ctx, tmp_path, visibility="public")
    one = {"files": ("a.png", png_bytes((250, 0, 0)))}
    assert anon_client.post(f"/api/v1/models/{mid}/predict", files=one).status_code == 200
    assert client.patch(f"/api/v1/models/{mid}", json={"visibility": "private"}).status_code \
        == 200
    # The cached lookup of the anonymous caller is dropped when the change commits.
    assert anon_client.post(f"/api/v1/models/{mid}/predict", files=one).status_code == 404
    assert client.post(f"/api/v1/models/{mid}/predict", files=one).status_code == 200


def test_concurrent_requests_one_bad_file_fails_only_its_own(ctx, token, tmp_path) -> None:  # noqa: ANN001
    mid = register_classifier(ctx, tmp_path)
    app = create_app(ctx)

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                     headers={"Authorization": f"Bearer {token}"}) as c:
            sends = [c.post(f"/api/v1/models/{mid}/predict",
                            files={"files": (f"{i}.png", png_bytes((250, 0, 0)))})
                     for i in range(7)]
            sends.append(c.post(f"/api/v1/models/{mid}/predict",
                                files={"files": ("bad.png", b"not an image")}))
            return await asyncio.gather(*sends)

    out = asyncio.run(main())
    assert [r.status_code for r in out] == [200] * 7 + [415]
    assert all(r.json()["results"][0]["result"]["top"][0]["label"] == "Calanoida"
               for r in out[:7])
    assert "bad.png" in out[7].json()["message"]
