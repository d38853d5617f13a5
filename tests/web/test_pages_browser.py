"""The home and collection pages in a real browser: Debian's chromium driven by Playwright,
against a real uvicorn server on a free 127.0.0.1 port."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not "
                                 "installed (/usr/bin/chromium); `make test` installs it as root")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(ctx, client):  # noqa: ANN001, ANN201 - client: the same ctx, seeded below
    import uvicorn

    from aqualens.api.app import create_app
    from tests.api.helpers import seed

    seed(ctx, 3, collection="reef", instrument="GoPro")
    seed(ctx, 2, collection="reef", instrument="UVP6")
    cid = client.get("/api/v1/collections/reef").json()["id"]
    client.patch(f"/api/v1/collections/{cid}", json={"visibility": "public",
                                                     "description": "Reef survey"})
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", cid
    srv.should_exit = True
    thread.join(10)


def test_browse_and_search(server):
    from playwright.sync_api import sync_playwright

    base, cid = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.goto(base + "/")
            card = page.locator(".collection")
            assert card.count() == 1
            assert card.locator(".count").inner_text() == "5"
            # the thumbnails really load (the browser decoded them)
            page.wait_for_function("() => [...document.querySelectorAll('.strip img')]"
                                   ".every(i => i.complete && i.naturalWidth > 0)")
            assert page.locator(".strip img").count() == 4
            page.click("text=reef")
            page.wait_for_url(f"**/collections/{cid}")
            assert page.locator(".result").count() == 5
            page.fill("input[name=instrument]", "UVP6")
            page.click("button[type=submit]")
            page.wait_for_url("**instrument=UVP6**")
            assert page.locator(".result").count() == 2
            page.fill("input[name=bbox]", "1,2,3")
            page.click("button[type=submit]")
            assert "bbox" in page.locator(".error").inner_text()
            page.goto(base + f"/collections/{cid}")
            page.locator(".result a").first.click()
            assert "sha256:" in page.locator("table.meta").inner_text()
        finally:
            browser.close()
