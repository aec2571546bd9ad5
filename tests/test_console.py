"""The web console at /ui, driven in Debian's Chromium (headless, through Playwright): sign-in, a
streamed playground call, the usage chart, a budget's bar, a batch's progress, and what a wrong key
gets. What the pages show is checked against what the gateway's own APIs answer. Each page's
screenshot is saved under .tools/console/."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from llmgateway.v1 import (
    batch_service_pb2,
    batch_service_pb2_grpc,
    budget_service_pb2,
    budget_service_pb2_grpc,
    budgets_pb2,
)
from tests.conftest import RunningGateway, chat, openai_toml, running_gateway
from tests.fakes.openai import FakeOpenAI, Reply

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / ".tools" / "console"
ADMIN, TEAM = "console-admin-key-0123456789", "console-team-key-01234567890"
KEYS = f"""
[[auth.keys]]
name = "ops"
key = "{ADMIN}"
role = "admin"

[[auth.keys]]
name = "team"
key = "{TEAM}"
"""
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


# Script errors of every page a test opens: none is expected.
PAGE_ERRORS: list[str] = []


@pytest.fixture(autouse=True)
def no_script_errors() -> Iterator[None]:
    PAGE_ERRORS.clear()
    yield
    assert PAGE_ERRORS == []


def grpc_key(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


async def opened(browser: Browser, **options: Any) -> Page:
    page = await browser.new_page(**options)
    page.on("pageerror", lambda error: PAGE_ERRORS.append(str(error)))
    # Refused requests are the API's answers, checked where they matter; anything else is a fault.
    page.on(
        "console",
        lambda message: (
            PAGE_ERRORS.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    return page


async def signed_in(browser: Browser, gw: RunningGateway, key: str = TEAM) -> Page:
    page = await opened(browser, viewport={"width": 1280, "height": 860})
    await page.goto(f"{gw.http_url}/ui")
    await page.get_by_label("Gateway key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("navigation", name="Sections")).to_be_visible()
    return page


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_a_wrong_key_is_refused_and_the_right_one_signs_in(browser: Browser) -> None:
    async with running_gateway(KEYS) as gw:
        page = await opened(browser)
        await page.goto(f"{gw.http_url}/ui")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await shot(page, "sign-in")
        await page.get_by_label("Gateway key").fill("not-a-key-of-this-gateway")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_have_text("That key was refused.")
        assert await page.get_by_role("navigation", name="Sections").is_hidden()
        await page.get_by_label("Gateway key").fill(TEAM)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("heading", name="Playground")).to_be_visible()
        # The key lives in this tab's session storage only, never in the page.
        assert TEAM not in await page.content()
        assert await page.evaluate("sessionStorage.getItem('llm-gateway-key')") == TEAM
        assert await page.evaluate("localStorage.length") == 0
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


async def test_a_streamed_playground_call_shows_its_text_cost_and_latency(browser: Browser) -> None:
    async with running_gateway(KEYS) as gw:
        page = await signed_in(browser, gw)
        await page.get_by_label("Model", exact=True).select_option("mock:echo")
        # The catalog's prices, context and capabilities for the chosen model.
        await expect(page.locator("#model-about")).to_have_text(
            "$0.15 in / $0.6 out per M tokens · 128,000 tokens of context · "
            "json_object, json_schema, streaming, tools, vision"
        )
        await page.get_by_label("Message").fill("Bonjour from the console")
        await page.get_by_role("button", name="Send").click()
        output = page.get_by_test_id("output")
        await expect(output).to_have_text("Bonjour from the console")
        details = page.get_by_test_id("details")
        await expect(details).to_contain_text("Cost")
        text = await details.inner_text()
        # The same call through gRPC costs the same, to the digit.
        reply = await gw.stub.Chat(chat("mock:echo", "Bonjour from the console"), metadata=grpc_key(TEAM))
        assert f"${reply.cost.total} (input" in text
        assert "First token" in text
        assert "ms" in text.split("First token", 1)[1].split("\n", 2)[1]
        assert "1 attempt" in text
        await shot(page, "playground")

        # The exchange is kept: the next message goes with it, so the prompt grows.
        turns = page.get_by_role("list", name="Conversation so far")
        await expect(turns.locator("li")).to_have_count(2)
        await expect(turns).to_contain_text("Bonjour from the console")
        first_prompt = int(text.split("Tokens", 1)[1].split(" in", 1)[0].strip())

        # Two models side by side, unary this time, the conversation sent to both.
        await page.get_by_label("Message").fill("Bonjour from the console")
        await page.get_by_label("Compare with").select_option("mock:echo-large")
        await page.get_by_label("Stream").uncheck()
        await page.get_by_role("button", name="Send").click()
        await expect(page.get_by_test_id("output")).to_have_count(2)
        await expect(page.get_by_test_id("output").nth(1)).to_have_text("Bonjour from the console")
        await expect(page.get_by_test_id("details").nth(1)).to_contain_text("mock:echo-large")
        second = await page.get_by_test_id("details").first.inner_text()
        assert int(second.split("Tokens", 1)[1].split(" in", 1)[0].strip()) > first_prompt
        await expect(turns.locator("li")).to_have_count(4)
        await shot(page, "playground-compare")
        await page.get_by_role("button", name="New conversation").click()
        await expect(turns).to_be_hidden()


async def test_the_usage_chart_shows_the_calls_just_made(browser: Browser) -> None:
    async with running_gateway(KEYS) as gw:
        spent: dict[str, Decimal] = {"mock:echo": Decimal(0), "mock:echo-large": Decimal(0)}
        for n, model in enumerate(
            ["mock:echo", "mock:echo-large", "mock:echo", "mock:echo-large", "mock:echo"]
        ):
            reply = await gw.stub.Chat(chat(model, f"call number {n}"), metadata=grpc_key(TEAM))
            spent[model] += Decimal(reply.cost.total)
        page = await signed_in(browser, gw)
        await page.goto(f"{gw.http_url}/ui/#/usage")
        await page.get_by_label("Split by").select_option("model")
        async with asyncio.timeout(20):
            while True:  # the ledger is written in the background: apply until it has all five
                await page.get_by_role("button", name="Apply").click()
                calls = page.locator("[data-field=requests]")
                if await calls.count() and await calls.inner_text() == "5":
                    break
                await asyncio.sleep(0.3)
        bars = page.get_by_test_id("cost-chart").locator("rect")
        drawn: dict[str, Decimal] = {}
        for i in range(await bars.count()):
            series = await bars.nth(i).get_attribute("data-series") or ""
            drawn[series] = drawn.get(series, Decimal(0)) + Decimal(
                await bars.nth(i).get_attribute("data-cost") or "0"
            )
        assert set(drawn) == set(spent)
        for model, amount in spent.items():  # floats in SVG: equal to the cent's billionth
            assert abs(drawn[model] - amount) < Decimal("1e-12"), (model, drawn[model], amount)
        await expect(page.locator("[data-field=cost]")).to_have_text(f"${sum(spent.values())}")
        await shot(page, "usage")
        # The export holds the same numbers.
        async with page.expect_download() as download:
            await page.get_by_role("button", name="Export CSV").click()
        exported = await asyncio.to_thread(Path(await (await download.value).path()).read_text)
        assert (
            exported.splitlines()[0] == "start,model,requests,errors,prompt_tokens,completion_tokens,cost_usd"
        )
        assert sum(int(line.split(",")[2]) for line in exported.splitlines()[1:]) == 5


async def test_a_budgets_bar_moves_after_a_call(browser: Browser) -> None:
    async with running_gateway(KEYS + "\n[budgets]\nrefresh_interval = 0.1\n") as gw:
        budgets = budget_service_pb2_grpc.BudgetServiceStub(gw.channel)
        await budgets.CreateBudget(
            budget_service_pb2.CreateBudgetRequest(
                budget=budgets_pb2.Budget(
                    id="team-month", scope="key:team", limit_usd="1", thresholds=["50", "80"]
                )
            ),
            metadata=grpc_key(ADMIN),
        )
        page = await signed_in(browser, gw)
        await page.goto(f"{gw.http_url}/ui/#/budgets")
        meter = page.get_by_role("meter", name="team-month spent")
        await expect(meter).to_have_attribute("data-spent", "0")
        await expect(page.get_by_text("Alerts are shown to admin keys.")).to_be_visible()
        reply = await gw.stub.Chat(chat("mock:echo-large", "spend something"), metadata=grpc_key(TEAM))
        await expect(meter).to_have_attribute("data-spent", reply.cost.total, timeout=15_000)
        width = await meter.locator(".spent").evaluate("el => parseFloat(el.style.width)")
        assert width == pytest.approx(100 * float(reply.cost.total), rel=1e-6)
        await shot(page, "budgets")


async def test_a_batchs_progress_updates_and_its_results_show(
    browser: Browser, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(*[Reply(echo=True, delay=0.4) for _ in range(6)])
    async with running_gateway(KEYS + openai_toml(fake_openai.base_url)) as gw:
        batches = batch_service_pb2_grpc.BatchServiceStub(gw.channel)
        created = await batches.CreateBatch(
            batch_service_pb2.CreateBatchRequest(
                requests=[
                    batch_service_pb2.BatchRequestItem(
                        custom_id=f"item-{n}", request=chat("openai:gpt-4o-mini", f"row {n}")
                    )
                    for n in range(6)
                ],
                max_concurrent_requests=1,
                return_individual_costs=True,
            ),
            metadata=grpc_key(TEAM),
        )
        page = await signed_in(browser, gw)
        await page.goto(f"{gw.http_url}/ui/#/batches")
        progress = page.get_by_role("progressbar", name=f"{created.id} progress")
        seen: set[str] = set()
        async with asyncio.timeout(20):
            while "6" not in seen:
                seen.add(await progress.get_attribute("value") or "")
                await asyncio.sleep(0.1)
        assert len(seen - {"", "6"}) >= 1, seen  # it was seen part way, then done
        row = page.locator(f"tr[data-batch='{created.id}']")
        await expect(row).to_contain_text("completed")
        await row.get_by_role("button", name="Results").click()
        results = page.get_by_role("table", name=f"Results of {created.id}")
        await expect(results.locator("tbody tr")).to_have_count(6)
        await expect(results).to_contain_text("row 3")
        await shot(page, "batches")


async def test_the_models_page_lists_the_catalog_with_live_state(browser: Browser) -> None:
    async with running_gateway(KEYS) as gw:
        page = await signed_in(browser, gw)
        await page.goto(f"{gw.http_url}/ui/#/models")
        row = page.locator("tr[data-model='mock:echo']")
        await expect(row).to_contain_text("closed")
        before = int(await row.locator("[data-field=recent_calls]").inner_text())
        await gw.stub.Chat(chat("mock:echo", "count me"), metadata=grpc_key(TEAM))
        await expect(row.locator("[data-field=recent_calls]")).to_have_text(str(before + 1), timeout=10_000)
        await shot(page, "models")


async def test_the_console_is_served_with_a_strict_policy_and_no_secret(browser: Browser) -> None:
    async with running_gateway(KEYS) as gw:
        page = await opened(browser)
        response = await page.goto(f"{gw.http_url}/ui/")
        assert response is not None
        headers = await response.all_headers()
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        for name in (
            "index.html",
            "console.js",
            "lib.js",
            "playground.js",
            "views.js",
            "chart.js",
            "console.css",
        ):
            body = await (await page.request.get(f"{gw.http_url}/ui/{name}")).text()
            assert ADMIN not in body
            assert TEAM not in body
        missing = await page.request.get(f"{gw.http_url}/ui/../pyproject.toml")
        assert missing.status == 404


AXE = ROOT / "tools" / "node_modules" / "axe-core" / "axe.min.js"


async def test_no_page_has_a_serious_accessibility_violation(
    browser: Browser, fake_openai: FakeOpenAI
) -> None:
    """axe-core on every page, filled with data (a result, a budget, a batch): nothing serious or
    critical (contrast, names, labels, roles, landmarks)."""
    async with running_gateway(KEYS + openai_toml(fake_openai.base_url)) as gw:
        budgets = budget_service_pb2_grpc.BudgetServiceStub(gw.channel)
        await budgets.CreateBudget(
            budget_service_pb2.CreateBudgetRequest(
                budget=budgets_pb2.Budget(id="all", scope="gateway", limit_usd="5")
            ),
            metadata=grpc_key(ADMIN),
        )
        await batch_service_pb2_grpc.BatchServiceStub(gw.channel).CreateBatch(
            batch_service_pb2.CreateBatchRequest(
                requests=[batch_service_pb2.BatchRequestItem(custom_id="a", request=chat("mock:echo", "hi"))]
            ),
            metadata=grpc_key(ADMIN),
        )
        context = await browser.new_context(bypass_csp=True)  # axe is injected as a script of its own
        page = await context.new_page()
        page.on("pageerror", lambda error: PAGE_ERRORS.append(str(error)))
        found: dict[str, list[str]] = {}

        async def audit(name: str) -> None:
            await page.add_script_tag(path=str(AXE))
            result = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
            found[name] = [
                f"{v['id']} ({v['impact']}): {v['help']}"
                for v in result["violations"]
                if v["impact"] in ("serious", "critical")
            ]

        await page.goto(f"{gw.http_url}/ui")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await audit("sign-in")
        await page.get_by_label("Gateway key").fill(ADMIN)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_label("Message").fill("Accessible?")
        await page.get_by_role("button", name="Send").click()
        await expect(page.get_by_test_id("details")).to_contain_text("Cost")
        await audit("playground")
        for name, ready in (
            ("models", "tr[data-model]"),
            ("usage", "[data-field=requests]"),
            ("budgets", "[role=meter]"),
            ("batches", "tr[data-batch]"),
        ):
            await page.goto(f"{gw.http_url}/ui/#/{name}")
            await page.locator(ready).first.wait_for()
            await audit(name)
        # The check itself: a page with an unlabelled input and low contrast fails it.
        await page.set_content('<main><input><p style="color:#ccc;background:#fff">faint</p></main>')
        await audit("a bad page")
        await context.close()
    bad = found.pop("a bad page")
    assert any(line.startswith("label ") for line in bad), bad
    assert any(line.startswith("color-contrast ") for line in bad), bad
    assert found == {name: [] for name in found}, found
    assert len(found) == 6


async def test_keyboard_alone_signs_in_and_moves_between_pages(browser: Browser) -> None:
    async with running_gateway(KEYS) as gw:
        page = await opened(browser)
        await page.goto(f"{gw.http_url}/ui")
        await expect(page.get_by_label("Gateway key")).to_be_focused()  # focus starts where it is needed
        await page.keyboard.type(TEAM)
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Playground")).to_be_visible()
        await page.get_by_role("link", name="Models").focus()
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Models")).to_be_visible()
        await expect(page.get_by_role("link", name="Models")).to_have_attribute("aria-current", "page")


async def test_every_page_fits_a_phone(browser: Browser) -> None:
    async with running_gateway(KEYS) as gw:
        await gw.stub.Chat(chat("mock:echo", "one call for the pages"), metadata=grpc_key(TEAM))
        page = await opened(browser, viewport={"width": 390, "height": 844}, is_mobile=True)
        await page.goto(f"{gw.http_url}/ui")
        await page.get_by_label("Gateway key").fill(TEAM)
        await page.get_by_role("button", name="Sign in").click()
        for name in ("playground", "models", "usage", "budgets", "batches"):
            await page.goto(f"{gw.http_url}/ui/#/{name}")
            await expect(page.get_by_role("heading", level=1)).to_have_text(name.capitalize())
            await page.wait_for_timeout(300)  # its first data drawn
            # Nothing wider than the screen but a table, which scrolls in its own box.
            overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (name, overflow)
            await shot(page, f"phone-{name}")


async def test_a_batch_is_cancelled_from_its_row(browser: Browser, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(*[Reply(echo=True, delay=1.0) for _ in range(4)])
    async with running_gateway(KEYS + openai_toml(fake_openai.base_url)) as gw:
        created = await batch_service_pb2_grpc.BatchServiceStub(gw.channel).CreateBatch(
            batch_service_pb2.CreateBatchRequest(
                requests=[
                    batch_service_pb2.BatchRequestItem(
                        custom_id=f"c{n}", request=chat("openai:gpt-4o-mini", f"{n}")
                    )
                    for n in range(4)
                ],
                max_concurrent_requests=1,
            ),
            metadata=grpc_key(TEAM),
        )
        page = await signed_in(browser, gw)
        await page.goto(f"{gw.http_url}/ui/#/batches")
        row = page.locator(f"tr[data-batch='{created.id}']")
        await row.get_by_role("button", name="Cancel").click()
        await expect(row).to_contain_text("cancelled", timeout=10_000)
        await expect(row.get_by_role("button", name="Cancel")).to_have_count(0)
        shown = await batch_service_pb2_grpc.BatchServiceStub(gw.channel).GetBatch(
            batch_service_pb2.GetBatchRequest(id=created.id), metadata=grpc_key(TEAM)
        )
        assert shown.counts.cancelled >= 2
