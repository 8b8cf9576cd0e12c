"""A person's journey in a real browser: Debian's chromium driven by Playwright.

Sign up two users, log one out and back in, upload a photo through the form, follow from
the profile page, and see the photo in the follower's feed. No JavaScript of ours runs:
the pages are plain forms and links.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import Deployment

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless chromium; fails (never skips) when it is not installed."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (scripts/test does)",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


def test_sign_up_log_in_upload_follow_and_see_the_feed(
    browser: Any,
    deployment: Deployment,
    username: Callable[[str], str],
    png: Callable[..., bytes],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    base = deployment.base_url
    author, reader = username("author"), username("reader")
    caption = f"sunrise {author}"
    author_context = browser.new_context(base_url=base, java_script_enabled=False)
    reader_context = browser.new_context(base_url=base, java_script_enabled=False)
    try:
        author_page = author_context.new_page()
        reader_page = reader_context.new_page()

        for page, name in ((author_page, author), (reader_page, reader)):
            page.goto("/signup")
            page.fill("input[name=username]", name)
            page.fill("input[name=password]", "correct horse battery")
            page.click("main button[type=submit]")
            expect(page).to_have_url(f"{base}/")
            expect(page.locator("#my-profile")).to_have_text(name)

        # The reader logs out and back in through the login form.
        reader_page.click("text=Log out")
        expect(reader_page).to_have_url(f"{base}/login?logged_out=1")
        reader_page.fill("input[name=username]", reader)
        reader_page.fill("input[name=password]", "wrong password")
        reader_page.click("main button[type=submit]")
        expect(reader_page.locator(".flash.error")).to_contain_text("wrong username or password")
        reader_page.fill("input[name=username]", reader)
        reader_page.fill("input[name=password]", "correct horse battery")
        reader_page.click("main button[type=submit]")
        expect(reader_page).to_have_url(f"{base}/")

        # The author uploads a photo through the form.
        author_page.goto("/upload")
        author_page.set_input_files(
            "input[name=photo]",
            files=[{"name": "sunrise.png", "mimeType": "image/png", "buffer": png(640, 480)}],
        )
        author_page.fill("input[name=caption]", caption)
        author_page.click("main button[type=submit]")
        expect(author_page.locator(".flash").first).to_contain_text("Photo uploaded")
        expect(author_page.locator("figcaption")).to_contain_text(caption)

        # The reader follows the author from the profile page.
        reader_page.goto(f"/users/{author}")
        reader_page.click("main button:text-is('Follow')")
        expect(reader_page.locator(".flash").first).to_contain_text(f"You follow {author} now.")
        expect(reader_page.locator("#followers")).to_have_text("1")

        # ... and sees the photo in the feed, as a loaded thumbnail linking to its page,
        # which shows the original.
        image = reader_page.locator(f"img[alt='{caption}']")
        for _ in range(50):
            reader_page.goto("/")
            if image.count():
                break
            reader_page.wait_for_timeout(200)
        expect(image).to_be_visible()
        assert image.evaluate("img => img.complete && img.naturalWidth > 0")
        link = image.locator("xpath=..")
        assert link.get_attribute("href").startswith("/photos/")
        photo_page = reader_page.request.get(link.get_attribute("href"))
        assert photo_page.status == 200
        original_src = re.search(r'<img src="([^"]+)"', photo_page.text())
        assert original_src is not None
        original = reader_page.request.get(html.unescape(original_src.group(1)))
        assert original.status == 200
        assert original.headers["content-type"] == "image/png"
        screenshot = tmp_path / "feed.png"
        reader_page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 1000
    finally:
        author_context.close()
        reader_context.close()


SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
PHONE = {"width": 375, "height": 740}


def _box(page: Any, selector: str) -> dict[str, float]:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, selector
    return dict(box)


def test_the_pages_a_new_user_meets(
    browser: Any,
    deployment: Deployment,
    username: Callable[[str], str],
    png: Callable[..., bytes],
) -> None:
    """The first hour: the upload form fits its card, an upload over the limit keeps the
    form and the caption, one's own photos fill one's feed, people can be found, error
    pages keep the navigation, deleting asks first, logging out says so, and the header
    stays on one line on a phone. Screenshots of each step go to var/screenshots/."""
    from playwright.sync_api import expect

    base = deployment.base_url
    shots = SCREENSHOTS / deployment.name
    shots.mkdir(parents=True, exist_ok=True)
    stem = username("new")
    name, other = f"{stem}a", f"{stem}b"
    context = browser.new_context(base_url=base, java_script_enabled=False)
    phone = browser.new_context(base_url=base, java_script_enabled=False, viewport=PHONE)
    try:
        page = context.new_page()
        for who in (other, name):  # the second sign-up stays logged in
            page.goto("/signup")
            page.fill("input[name=username]", who)
            page.fill("input[name=password]", "correct horse battery")
            page.click("main button[type=submit]")
            expect(page.locator("#my-profile")).to_have_text(who)
            if who == other:
                page.click("text=Log out")
                expect(page.locator(".flash")).to_have_text("You are logged out.")
        expect(page.locator(".empty")).to_contain_text("your own photos show here too")

        # The upload form stays inside its card, and says the limit.
        page.goto("/upload")
        card = _box(page, "form.card")
        for field in ("input[name=photo]", "input[name=caption]", "form.card button"):
            box = _box(page, field)
            assert box["x"] + box["width"] <= card["x"] + card["width"] + 0.5, field
        expect(page.locator("form.card small")).to_contain_text("at most 293 KiB")
        page.screenshot(path=str(shots / "upload-desktop.png"), full_page=True)

        # Far over the limit: the same form comes back, with the caption and the limit.
        page.fill("input[name=caption]", "a very large sunset")
        page.set_input_files(
            "input[name=photo]",
            files=[{"name": "big.png", "mimeType": "image/png", "buffer": b"\0" * 1_500_000}],
        )
        page.click("main button[type=submit]")
        expect(page.locator(".flash.error")).to_contain_text("too large: at most 293 KiB")
        expect(page.locator("input[name=caption]")).to_have_value("a very large sunset")
        page.screenshot(path=str(shots / "upload-too-large.png"), full_page=True)

        # Two photos of one's own fill one's own feed, newest first, in UTC.
        for caption, color in (("first light", (250, 200, 40)), ("second light", (40, 90, 200))):
            page.goto("/upload")
            page.fill("input[name=caption]", caption)
            page.set_input_files(
                "input[name=photo]",
                files=[{"name": "p.png", "mimeType": "image/png", "buffer": png(480, 360, color)}],
            )
            page.click("main button[type=submit]")
            expect(page.locator(".flash").first).to_contain_text("Photo uploaded")
        page.goto("/")
        captions = page.locator(".photos .caption")
        expect(captions).to_have_text(["second light", "first light"])
        expect(page.locator(".photos time").first).to_contain_text("UTC")
        page.screenshot(path=str(shots / "own-feed-desktop.png"), full_page=True)

        # A thumbnail opens the photo's page, not the raw file.
        page.click("img[alt='second light']")
        expect(page).to_have_url(f"{base}/photos/" + page.url.rsplit("/", 1)[1])
        expect(page.locator("figcaption")).to_contain_text("second light")

        # Deleting asks first.
        page.click("text=Delete this photo")
        expect(page.locator("h1")).to_have_text("Delete this photo?")
        page.screenshot(path=str(shots / "delete-confirm.png"), full_page=True)
        page.click("button:text-is('Delete for good')")
        expect(page.locator(".flash").first).to_have_text("Photo deleted.")
        expect(page.locator(".photos .caption")).to_have_text(["first light"])

        # Finding people: by the start of a name, then following one; "1 follower".
        page.goto("/people")
        page.fill("input[name=q]", stem)
        page.click("form.search button")
        expect(page.locator("ul.people a")).to_have_text([name, other])
        page.screenshot(path=str(shots / "people-desktop.png"), full_page=True)
        page.click(f"ul.people a:text-is('{other}')")
        page.click("main button:text-is('Follow')")
        expect(page.locator("p.counts")).to_contain_text("1 follower ·")

        # An error page keeps the navigation of the user.
        page.goto("/users/nobody_" + stem[-8:])
        expect(page.locator("h1")).to_have_text("404")
        expect(page.locator("#my-profile")).to_have_text(name)

        # On a phone the header stays one line.
        phone_page = phone.new_page()
        phone_page.goto("/login")
        phone_page.fill("input[name=username]", name)
        phone_page.fill("input[name=password]", "correct horse battery")
        phone_page.click("main button[type=submit]")
        expect(phone_page.locator("#my-profile")).to_be_visible()
        phone_page.screenshot(path=str(shots / "feed-phone.png"), full_page=True)
        bar, brand = _box(phone_page, "header.bar"), _box(phone_page, ".brand")
        logout = _box(phone_page, "nav button")
        assert abs(logout["y"] - brand["y"]) < brand["height"], (brand, logout)
        assert bar["height"] < 3 * brand["height"], bar
        assert logout["x"] + logout["width"] <= PHONE["width"], logout
        phone_page.goto("/upload")
        card = _box(phone_page, "form.card")
        photo_input = _box(phone_page, "input[name=photo]")
        assert photo_input["x"] + photo_input["width"] <= card["x"] + card["width"] + 0.5
        phone_page.screenshot(path=str(shots / "upload-phone.png"), full_page=True)
    finally:
        context.close()
        phone.close()
