"""A person's journey in a real browser: Debian's chromium driven by Playwright.

Sign up two users, log one out and back in, upload a photo through the form, follow from
the profile page, and see the photo in the follower's feed. No JavaScript of ours runs:
the pages are plain forms and links.
"""

from __future__ import annotations

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
        expect(reader_page).to_have_url(f"{base}/login")
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

        # ... and sees the photo in the feed, as a loaded thumbnail linking to the original.
        image = reader_page.locator(f"img[alt='{caption}']")
        for _ in range(50):
            reader_page.goto("/")
            if image.count():
                break
            reader_page.wait_for_timeout(200)
        expect(image).to_be_visible()
        assert image.evaluate("img => img.complete && img.naturalWidth > 0")
        link = image.locator("xpath=..")
        original = reader_page.request.get(link.get_attribute("href"))
        assert original.status == 200
        assert original.headers["content-type"] == "image/png"
        screenshot = tmp_path / "feed.png"
        reader_page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 1000
    finally:
        author_context.close()
        reader_context.close()
