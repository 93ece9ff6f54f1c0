"""The approval console in a real browser: Debian's headless Chromium, driven by
Selenium through chromium-driver, against a server on a real port and the test Redis.

Selenium blocks, so every browser step runs in a thread (`trio.to_thread`) while the
server and the test's own SSE clients go on in the Trio loop. Each test saves a
screenshot of its final state under its temporary directory. Skipped only where no
Chromium or chromium-driver can be had.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from .helpers import HOST, Aura, auth, events_of, rest_of, token, until_hitl

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromium-driver (apt)"
)

T = TypeVar("T")


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--disable-gpu"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        yield browser
    finally:
        browser.quit()


class Console:
    """The console page in the browser; each step in a thread."""

    def __init__(self, driver: Any, port: int) -> None:
        self.driver = driver
        self.url = f"http://{HOST}:{port}/aura/console"

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(function, *args)

    async def open(self, jwt: str | None) -> None:
        await self.call(self.driver.get, "about:blank")
        await self.call(self.driver.get_log, "browser")  # drop what came before
        fragment = f"#token={jwt}" if jwt else ""
        await self.call(self.driver.get, self.url + fragment)
        await self.until(lambda: self.elements("#inbox[data-loaded]"))

    async def until(self, probe: Callable[[], T], within: float = 15) -> T:
        with trio.fail_after(within):
            while True:
                try:
                    found = await self.call(probe)
                except WebDriverException:
                    found = None  # e.g. an element replaced while it was read
                if found:
                    return found
                await trio.sleep(0.1)

    async def card(self, request_id: str, where: str = "#inbox") -> WebElement:
        selector = f'{where} .card[data-request-id="{request_id}"]'
        cards = await self.until(lambda: self.elements(selector))
        return cards[0]

    async def card_asked_by(self, stream: Any) -> tuple[dict[str, Any], WebElement]:
        """The `hitl` event `stream` reaches, and its request's card in the inbox."""
        asked = await until_hitl(stream)
        return asked, await self.card(asked["requestId"])

    def elements(self, selector: str) -> list[WebElement]:
        """The page's elements matching `selector` now (a probe for :meth:`until`)."""
        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    async def field(self, card: WebElement, selector: str) -> WebElement:
        return await self.call(card.find_element, By.CSS_SELECTOR, selector)

    async def click(self, scope: WebElement, selector: str) -> None:
        await self.call(scope.find_element(By.CSS_SELECTOR, selector).click)

    async def text(self, selector: str) -> str:
        element = await self.call(self.driver.find_element, By.CSS_SELECTOR, selector)
        return str(await self.call(lambda: element.text))

    def severe_logs(self) -> list[dict[str, Any]]:
        return [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.fixture
async def console(driver: Any, aura: Aura, tmp_path: Path) -> AsyncIterator[Console]:
    page = Console(driver, aura.port)
    try:
        yield page
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(driver.save_screenshot, str(tmp_path / "final.png"))


async def test_the_page_loads_with_a_strict_policy_and_no_console_errors(console, aura):
    jwt = token("alice", "t1")
    await console.open(jwt)
    assert "alice" in await console.text("#who") and "t1" in await console.text("#who")
    # The token left the address bar and lives in this tab's sessionStorage.
    assert "#token" not in await console.call(lambda: console.driver.current_url)
    stored = await console.call(
        console.driver.execute_script, "return sessionStorage.getItem('aura.console.token')"
    )
    assert stored == jwt
    assert await console.text("#inbox-empty") == "Nothing is waiting for approval."
    assert await console.call(console.severe_logs) == []
    response = await aura.request("GET", "/aura/console", headers={})
    assert response.status == 200
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    page = response.body.decode()
    assert "<script>" not in page and "style=" not in page and "http" not in page.split("<body>")[1]
    # Its files, and nothing else under the folder.
    script = await aura.request("GET", "/aura/console/console.js", headers={})
    assert script.status == 200 and script.headers["content-type"].startswith("text/javascript")
    missing = await aura.request("GET", "/aura/console/app.py", headers={})
    assert missing.status == 404 and missing.json()["errorCode"] == "NOT_FOUND"


async def test_approve_in_the_inbox_resumes_another_clients_stream(console, aura):
    await console.open(token("alice", "t1"))
    async with aura.stream("please merge PR 42") as stream:
        asked, card = await console.card_asked_by(stream)
        card_text = await console.call(lambda: card.text)
        for shown in (asked["requestId"], "git_merge", asked["message"], "alice", "expires in"):
            assert shown in card_text
        assert '"strategy": "merge"' in card_text
        await console.click(card, "button.approve")
        frames = await rest_of(stream)
    assert events_of(frames)[-1] == "end" and frames[-2].json()["status"] == "completed"
    assert frames[-1].is_done
    record = (await aura.request("GET", f"/aura/hitl/requests/{asked['requestId']}")).json()
    assert record["data"]["decidedBy"] == "alice" and record["data"]["via"] == "api"
    # The decided request leaves the inbox.
    await console.until(lambda: not console.elements("#inbox .card"))


async def test_reject_with_a_reason_ends_the_stream_with_it(console, aura):
    await console.open(token("alice", "t1"))
    async with aura.stream("please merge PR 42") as stream:
        _, card = await console.card_asked_by(stream)
        await console.click(card, "button.reject")
        reason = await console.field(card, "input.reason")
        await console.call(reason.send_keys, "not on a Friday")
        await console.click(card, "button.send-reject")
        frames = await rest_of(stream)
    assert events_of(frames) == ["error"]
    assert frames[0].json()["errorType"] == "RejectionError"
    assert frames[0].json()["error"] == "not on a Friday"


async def test_edited_arguments_are_what_the_tool_runs_with(console, aura):
    await console.open(token("alice", "t1"))
    async with aura.stream("please merge PR 42") as stream:
        _, card = await console.card_asked_by(stream)
        await console.click(card, "button.edit")
        editor = await console.field(card, "textarea.args-editor")
        proposed = json.loads(await console.call(editor.get_attribute, "value"))
        assert proposed == {"requestedBy": "alice", "step": 1, "strategy": "merge"}
        await console.call(editor.clear)
        await console.call(editor.send_keys, json.dumps({**proposed, "strategy": "squash"}))
        await console.click(card, "button.send-edit")
        frames = await rest_of(stream)
    ran = [
        f.json()["data"]
        for f in frames
        if f.event == "tool_execution" and f.json()["data"]["status"] != "pending"
    ]
    assert ran and all(step["toolArgs"]["strategy"] == "squash" for step in ran)
    assert events_of(frames)[-1] == "end"


async def test_an_edit_outside_what_the_agent_allows_shows_the_envelope_and_decides_nothing(
    console, aura
):
    await console.open(token("alice", "t1"))
    async with aura.stream("please merge PR 42") as stream:
        asked, card = await console.card_asked_by(stream)
        await console.click(card, "button.edit")
        editor = await console.field(card, "textarea.args-editor")
        await console.call(editor.clear)
        await console.call(
            editor.send_keys, '{"requestedBy": "mallory", "step": 1, "strategy": "merge"}'
        )
        await console.click(card, "button.send-edit")
        # What the API answers for the same edit, shown as its envelope's message.
        expected = await aura.request(
            "POST",
            f"/aura/hitl/approve/{asked['requestId']}",
            body={"args": {"requestedBy": "mallory", "step": 1, "strategy": "merge"}},
        )
        assert expected.status == 400
        envelope = expected.json()
        shown = await console.until(lambda: card.find_element(By.CSS_SELECTOR, ".card-error").text)
        assert shown == f"{envelope['message']} ({envelope['errorCode']})"
        # Still pending: a plain approval goes through.
        await console.click(card, "button.approve")
        frames = await rest_of(stream)
    assert events_of(frames)[-1] == "end"


async def test_a_prompt_run_in_the_page_reaches_end_after_an_inline_approval(console, aura):
    await console.open(token("alice", "t1"))
    await console.click(console.driver, "#run")
    card = await console.until(lambda: console.elements('#events li[data-event="hitl"] .card'))
    request_id = await console.call(card[0].get_attribute, "data-request-id")
    await console.click(card[0], "button.approve")
    await console.until(lambda: console.elements('#events[data-closed="1000"]'))
    events = await console.call(
        lambda: [li.get_attribute("data-event") for li in console.elements("#events li")]
    )
    assert events[0] == "start" and "hitl" in events and events[-1] == "end"
    assert "Approved" in await console.call(lambda: card[0].text)
    record = (await aura.request("GET", f"/aura/hitl/requests/{request_id}")).json()["data"]
    assert record["status"] == "approved" and record["decidedBy"] == "alice"
    assert await console.call(console.severe_logs) == []


async def test_another_tenants_token_sees_an_empty_inbox(console, aura):
    async with aura.stream("please merge PR 42") as stream:
        asked = await until_hitl(stream)
        await console.open(token("mallory", "t2"))
        await trio.sleep(2.5)  # more than one poll
        assert await console.call(console.elements, "#inbox .card") == []
        assert await console.text("#inbox-empty") == "Nothing is waiting for approval."
        # The same page with the owner's token lists it.
        await console.open(token("alice", "t1"))
        await console.card(asked["requestId"])
        assert (await aura.approve(asked["requestId"], headers=auth())).status == 200
        await rest_of(stream)


async def test_a_refused_token_shows_the_envelopes_message(console, aura):
    bad = token("alice", "t1", secret="another-secret-that-is-long-enough-for-hs256")
    await console.open(bad)
    expected = await aura.request(
        "GET", "/aura/hitl/pending", headers={"Authorization": f"Bearer {bad}"}
    )
    assert expected.status == 401
    envelope = expected.json()
    shown = await console.until(lambda: console.driver.find_element(By.ID, "inbox-status").text)
    assert shown == f"{envelope['message']} ({envelope['errorCode']})"
    # A run with it is refused at the handshake, and the page says so.
    await console.click(console.driver, "#run")
    status = await console.until(lambda: console.driver.find_element(By.ID, "run-status").text)
    assert "refused" in status
