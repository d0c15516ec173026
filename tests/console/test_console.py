"""The web console in a real headless Chromium (Debian's chromium + chromium-driver, Selenium),
against the session's real stack through Envoy.

One browser for the module; the tests run in order and share what they made (the uploads, the
job). `make install` installs the browser; where it truly cannot be installed these tests skip
with a loud message, except under CI (CI=true), where a missing browser fails.

PIXMESH_SCREENSHOTS=1 also writes a screenshot of each page to docs/ (README "Console").
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from deploy.local import Stack
from services.runtime.bus import TASKS_STREAM, Bus, task_durable
from tests.integration.images import camera_jpeg

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AXE = Path(__file__).with_name("vendor") / "axe.min.js"
DOCS = REPO / "docs"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
]
WAIT_S = 30.0
METADATA_TASKS = task_durable("metadata")

try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import Select
except ImportError:  # pragma: no cover - selenium is a dev dependency
    webdriver = None


def _no_browser(why: str) -> None:
    banner = "!" * 78
    message = (
        f"\n{banner}\nBROWSER TESTS OF THE WEB CONSOLE NOT RUN: {why}\n"
        "install them with: apt-get install -y chromium chromium-driver (make install does)\n"
        f"{banner}\n"
    )
    sys.stderr.write(message)
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    if webdriver is None:
        _no_browser("the selenium package is missing")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        _no_browser(f"{CHROMIUM} or {CHROMEDRIVER} is missing")
    tmp = tmp_path_factory.mktemp("chromium")
    downloads = tmp / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp / 'profile'}"]:
        opts.add_argument(flag)
    opts.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    try:
        browser = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    except WebDriverException as exc:
        _no_browser(f"chromium did not start: {exc.msg}")
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    browser.downloads = downloads  # type: ignore[attr-defined]
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def admin_key(stack: Stack) -> str:
    return stack.create_api_key("console", "read,write,admin")


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    """What one test leaves for the next (they run in file order)."""
    return {}


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # stale elements while the page re-renders
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{what}: not seen after {timeout}s ({last!r})")


def css(driver: WebDriver, selector: str) -> list[WebElement]:
    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def one(driver: WebDriver, selector: str) -> WebElement:
    return wait_for(selector, lambda: (css(driver, selector) or [None])[0])


def screenshot(driver: WebDriver, name: str, width: int = 1280) -> None:
    if os.environ.get("PIXMESH_SCREENSHOTS"):
        DOCS.mkdir(exist_ok=True)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(max(int(height) + 40, 700), 2000))
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(DOCS / f"console-{name}.png"))
        driver.set_window_size(width, 1000 if width > 600 else 844)


def axe_check(driver: WebDriver, page: str) -> None:
    """axe-core (vendored from npm) on the page: no serious or critical violation."""
    driver.execute_script(AXE.read_text())
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then((r) => done(r.violations.map((v) => ({id: v.id, impact: v.impact,"
        " nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 3)}))))"
        ".catch((e) => done([{id: 'axe-error', impact: 'critical', nodes: [String(e)]}]));"
    )
    bad = [v for v in result if v["impact"] in ("serious", "critical")]
    assert not bad, f"{page}: {bad}"


def sign_in(driver: WebDriver, url: str, key: str) -> None:
    driver.get(f"{url}/")
    box = one(driver, 'input[name="key"]')
    box.clear()
    box.send_keys(key)
    one(driver, 'form button[type="submit"]').click()


def go(driver: WebDriver, url: str, route: str) -> None:
    driver.get(f"{url}/#/{route}")


def test_a_bad_key_shows_the_reason(driver: WebDriver, rest_url: str) -> None:
    # Keyboard only: the key field has the focus on load, Enter submits.
    driver.get(f"{rest_url}/")
    one(driver, 'input[name="key"]')
    driver.switch_to.active_element.send_keys("pm_not_a_key", Keys.ENTER)
    error = one(driver, '[data-testid="error"]')
    assert "UNAUTHENTICATED" in error.text
    assert "API_KEY_INVALID" in error.text
    assert css(driver, 'input[name="key"]'), "still on the sign-in form"
    screenshot(driver, "sign-in-error")
    axe_check(driver, "sign-in")


def test_sign_in_shows_the_tenant_and_uploads_several_files(
    driver: WebDriver, rest_url: str, admin_key: str, shared: dict[str, Any], tmp_path: Path
) -> None:
    sign_in(driver, rest_url, admin_key)
    tenant = one(driver, '[data-testid="tenant"]')
    wait_for("tenant shown", lambda: "tenant console" in tenant.text)
    small = tmp_path / "camera.jpg"
    small.write_bytes(camera_jpeg(1600, 1200, description=uuid.uuid4().hex))
    # Over the 4 MiB presign threshold: goes straight to object storage (CORS on the bucket).
    noise = Image.frombytes("RGB", (1300, 1300), os.urandom(1300 * 1300 * 3))
    big = tmp_path / "noise.png"
    noise.save(big, format="PNG", compress_level=1)
    assert big.stat().st_size > 4 * 1024 * 1024
    one(driver, "#files").send_keys(f"{small}\n{big}")
    done = wait_for(
        "both uploads done",
        lambda: len(css(driver, '[data-testid="upload-item"].done')) == 2 and css(driver, ".done"),
    )
    assert done
    items = {
        i.find_element(By.CSS_SELECTOR, "strong").text: i
        for i in css(driver, '[data-testid="upload-item"]')
    }
    assert "presigned" in items["noise.png"].text
    assert "presigned" not in items["camera.jpg"].text
    shared["image_id"] = items["camera.jpg"].get_attribute("data-image-id")
    shared["big_id"] = items["noise.png"].get_attribute("data-image-id")
    assert shared["image_id"].startswith("img_") and shared["big_id"].startswith("img_")
    screenshot(driver, "upload")
    axe_check(driver, "upload")


def _add_resize(driver: WebDriver, rendition: WebElement, width: int, height: int) -> None:
    rendition.find_element(By.XPATH, ".//button[starts-with(., 'Add operation')]").click()
    step = rendition.find_elements(By.CSS_SELECTOR, "li.step")[-1]
    Select(step.find_element(By.CSS_SELECTOR, 'select[name="operation"]')).select_by_value("resize")
    step.find_element(By.CSS_SELECTOR, 'input[name="width"]').send_keys(str(width))
    step.find_element(By.CSS_SELECTOR, 'input[name="height"]').send_keys(str(height))
    Select(step.find_element(By.CSS_SELECTOR, 'select[name="mode"]')).select_by_value("FILL")


def test_builds_a_two_rendition_pipeline_watches_it_succeed_and_downloads_an_output(
    driver: WebDriver, rest_url: str, admin_key: str, shared: dict[str, Any]
) -> None:
    go(driver, rest_url, "pipeline?example=0")
    form = one(driver, "form.pipeline")
    # An API error shows its code, reason and the field it names.
    image = form.find_element(By.CSS_SELECTOR, 'input[name="image"]')
    image.clear()
    image.send_keys("img_does_not_exist")
    form.find_element(By.CSS_SELECTOR, 'button[name="plan"]').click()
    error = one(driver, 'form.pipeline [data-testid="error"]')
    wait_for(
        "not-found error", lambda: "NOT_FOUND" in error.text and "IMAGE_NOT_FOUND" in error.text
    )
    image.clear()
    image.send_keys(shared["image_id"])
    form.find_element(By.XPATH, ".//button[.='Add operation']").click()
    step = css(driver, "form.pipeline > div > ol.steps > li.step")[-1]
    Select(step.find_element(By.CSS_SELECTOR, 'select[name="operation"]')).select_by_value("rotate")
    step.find_element(By.CSS_SELECTOR, 'input[name="background"]').send_keys("blue")
    form.find_element(By.CSS_SELECTOR, 'button[name="plan"]').click()
    wait_for(
        "field violation shown",
        lambda: (
            "operations[0].rotate.background"
            in one(driver, 'form.pipeline [data-testid="error"]').text
        ),
    )
    step.find_element(By.XPATH, ".//button[.='Remove step']").click()
    for name, size in (("thumb", 160), ("medium", 480)):
        form.find_element(By.XPATH, ".//button[.='Add rendition']").click()
        rendition = css(driver, "fieldset.rendition")[-1]
        box = rendition.find_element(By.CSS_SELECTOR, 'input[name="rendition-name"]')
        box.clear()
        box.send_keys(name)
        _add_resize(driver, rendition, size, size * 3 // 4)
    form.find_element(By.CSS_SELECTOR, 'button[name="plan"]').click()
    plan = one(driver, '[data-testid="plan"]')
    wait_for("both renditions planned", lambda: "160×120" in plan.text and "480×360" in plan.text)
    screenshot(driver, "pipeline")
    axe_check(driver, "pipeline")
    form.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()

    wait_for("job page", lambda: "#/jobs/job_" in driver.current_url)
    shared["job_id"] = driver.current_url.rsplit("/", 1)[1]
    wait_for(
        "job succeeded",
        lambda: css(driver, '[data-state="SUCCEEDED"]') and css(driver, '[data-ready="true"]'),
    )
    outputs = wait_for("two outputs", lambda: len(css(driver, '[data-testid="output"]')) == 2)
    assert outputs
    captions = " ".join(o.text for o in css(driver, '[data-testid="output"]'))
    assert "thumb" in captions and "medium" in captions
    # Every output image really loaded (natural size as stated).
    sizes = driver.execute_script(
        "return [...document.querySelectorAll('[data-testid=output] img')]"
        ".map((i) => [i.complete, i.naturalWidth, i.naturalHeight])"
    )
    assert sorted(sizes) == [[True, 160, 120], [True, 480, 360]]
    assert css(driver, '[data-testid="compare"] input[type="range"]')
    screenshot(driver, "job")
    axe_check(driver, "job")

    first = css(driver, '[data-testid="output"]')[0]
    index = first.get_attribute("data-index")
    first.find_element(By.CSS_SELECTOR, '[data-testid="download"]').click()
    downloads: Path = driver.downloads  # type: ignore[attr-defined]
    saved = wait_for(
        "a finished download",
        lambda: [p for p in downloads.iterdir() if not p.name.endswith(".crdownload")],
    )
    (path,) = saved
    expected = httpx.get(
        f"{rest_url}/v1/jobs/{shared['job_id']}/outputs/{index}",
        headers={"authorization": f"Bearer {admin_key}"},
    )
    assert expected.status_code == 200
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(expected.content).hexdigest()
    assert Image.open(io.BytesIO(data)).size in ((160, 120), (480, 360))


def test_jobs_list_shows_the_job(driver: WebDriver, rest_url: str, shared: dict[str, Any]) -> None:
    go(driver, rest_url, "jobs")
    row = one(driver, f'tr[data-job-id="{shared["job_id"]}"]')
    assert "SUCCEEDED" in row.text
    screenshot(driver, "jobs")
    axe_check(driver, "jobs")


def test_library_lists_uploads_with_placeholders_and_finds_similar(
    driver: WebDriver, rest_url: str, shared: dict[str, Any]
) -> None:
    go(driver, rest_url, "library")
    item = one(driver, f'[data-testid="library-item"][data-image-id="{shared["image_id"]}"]')
    wait_for(
        "the preview replaced the placeholder",
        lambda: item.find_element(By.TAG_NAME, "img").get_attribute("src").startswith("blob:"),
    )
    screenshot(driver, "library")
    axe_check(driver, "library")
    item.find_element(By.XPATH, ".//button[.='Find similar']").click()
    wait_for("similar results", lambda: "Similar to" in one(driver, "#results-title").text)


def _consumer(nats_url: str, pause: bool) -> None:
    async def go() -> None:
        bus = await Bus.connect(nats_url, "pixmesh-test-console")
        try:
            if pause:
                until = (datetime.now(UTC) + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                await bus.js.pause_consumer(TASKS_STREAM, METADATA_TASKS, until)
            else:
                await bus.js.resume_consumer(TASKS_STREAM, METADATA_TASKS)
        finally:
            await bus.close()

    asyncio.run(go())


def test_operations_view_shows_a_queue_filling_and_draining(
    driver: WebDriver, rest_url: str, admin_key: str, nats_url: str, shared: dict[str, Any]
) -> None:
    go(driver, rest_url, "ops")
    wait_for("live badge", lambda: one(driver, '[data-testid="live"]').text == "live")
    cell = f'[data-testid="pending-{METADATA_TASKS}"]'
    auth = {"authorization": f"Bearer {admin_key}"}
    _consumer(nats_url, pause=True)
    try:
        for _ in range(3):  # held: the metadata workers fetch nothing while it is paused
            resp = httpx.post(
                f"{rest_url}/v1/jobs",
                json={"image_id": shared["image_id"], "operations": [{"extract_metadata": {}}]},
                headers=auth,
            )
            assert resp.status_code == 200, resp.text
        wait_for("queue filled", lambda: int(one(driver, cell).text) >= 3)
        screenshot(driver, "operations")
        axe_check(driver, "operations")
    finally:
        _consumer(nats_url, pause=False)
    wait_for("queue drained", lambda: int(one(driver, cell).text) == 0)
    assert css(driver, "svg polyline"), "charts drawn"
    assert one(driver, "#dlq-title").text == "Dead letters"


def test_every_page_fits_a_phone_width(
    driver: WebDriver, rest_url: str, shared: dict[str, Any]
) -> None:
    driver.set_window_size(390, 844)
    try:
        for route in ("upload", "pipeline", "jobs", f"jobs/{shared['job_id']}", "library", "ops"):
            go(driver, rest_url, route)
            one(driver, "main h1")
            time.sleep(0.3)  # let the page's data arrive
            overflow = driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 1, f"{route}: {overflow}px wider than the phone"
            if route == "ops":
                screenshot(driver, "phone-operations", width=390)
    finally:
        driver.set_window_size(1280, 1000)


def test_sign_out_forgets_the_key(driver: WebDriver, rest_url: str) -> None:
    go(driver, rest_url, "upload")
    one(driver, "#signout").click()
    one(driver, 'input[name="key"]')
    assert driver.execute_script("return sessionStorage.getItem('pixmesh.key')") is None
