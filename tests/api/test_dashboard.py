"""The operator dashboard (API.md "Operations endpoints"): web/ served under
/ui/ on the admin port, driven in a real browser (Debian's chromium and
chromium-driver, headless, through Selenium; scripts/deps.sh --test
installs them). Every step waits on a condition in the page or in the API,
never on the passing of time, except where the condition is a lease running
out.

Screenshots go to build/artifacts/dashboard/ (one per test and backend,
taken when the test ends, failing or not); with SLUICE_UPDATE_SCREENSHOT=1
the last test also writes docs/dashboard.png, the README's picture."""

import os
import shutil
import threading
import time
import uuid

import pytest
import requests

from sluice_client import BACKEND, REPO, assert_error, assert_status, await_until, sleep_until, unique_name

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # reported below, as the module's failure
    webdriver = None

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = os.path.join(REPO, "build", "artifacts", "dashboard")
WAIT = 20  # seconds: the page polls every 2 s

_missing = [what for what, ok in [("chromium", os.path.exists(CHROMIUM)),
                                  ("chromium-driver", os.path.exists(CHROMEDRIVER)),
                                  ("Python's selenium", webdriver is not None)] if not ok]


@pytest.fixture(scope="module", autouse=True)
def _browser_installed():
    """make test installs the browser (scripts/deps.sh --test): missing, it
    is a failure, not a skip, like the other real tools of the suite."""
    assert not _missing, f"{', '.join(_missing)} not installed: run scripts/deps.sh --test"


@pytest.fixture(scope="module")
def driver():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
              "--force-device-scale-factor=1", "--lang=en-US"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield d
    finally:
        d.quit()


@pytest.fixture
def shot(driver, request):
    """The test's screenshot, saved when it ends (also when it failed)."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    yield
    driver.save_screenshot(os.path.join(ARTIFACTS, f"{BACKEND}-{request.node.name}.png"))


@pytest.fixture
def page(server, driver, shot):
    """The dashboard, logged in with the admin token, on the dev account."""
    login(driver, server)
    return driver


# --- helpers ------------------------------------------------------------------


def wait_for(driver, desc, fn, timeout=WAIT):
    """Waits until fn(driver) returns a truthy value and returns it; fails
    naming desc and the last value."""
    last = {}

    def check(d):
        try:
            last["v"] = fn(d)
        except StaleElementReferenceException:
            return False
        return last["v"]

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(check)
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout} s waiting for {desc}; last value: {last.get('v')!r}")


def css(driver, sel):
    return driver.find_elements(By.CSS_SELECTOR, sel)


def text_of(driver, sel):
    els = css(driver, sel)
    return els[0].text if els else None


def displayed(driver, sel):
    els = css(driver, sel)
    return bool(els) and els[0].is_displayed()


def login(driver, server):
    driver.get(server.admin_url + "/ui/")
    if displayed(driver, "#login-view"):
        box = driver.find_element(By.ID, "token")
        box.clear()
        box.send_keys(server.admin_token)
        driver.find_element(By.ID, "login").click()
    wait_for(driver, "the dashboard after logging in", lambda d: displayed(d, "#app"))
    click_account(driver, "dev")


def click_account(driver, name):
    sel = f'#accounts li[data-account="{name}"] button'
    wait_for(driver, f"account {name} in the list", lambda d: css(d, sel))[0].click()
    wait_for(driver, f"account {name} selected",
             lambda d: css(d, sel)[0].get_attribute("aria-current") == "true" and text_of(d, "#account-name") == name)


def cell(driver, q, cls):
    return text_of(driver, f'tr[data-queue="{q}"] .{cls}')


def await_cell(driver, q, cls, want):
    wait_for(driver, f"queue {q}'s {cls} to show {want!r}", lambda d: cell(d, q, cls) == want)


def queue_button(driver, q, cls):
    return wait_for(driver, f"the {cls} button of queue {q}", lambda d: css(d, f'tr[data-queue="{q}"] button.{cls}'))[0]


def confirm(driver, accept, expect_text):
    """Answers the confirmation dialog, which must name expect_text."""
    wait_for(driver, "the confirmation dialog", lambda d: displayed(d, "dialog#confirm"))
    said = driver.find_element(By.ID, "confirm-title").text + " " + driver.find_element(By.ID, "confirm-text").text
    assert expect_text in said, said
    driver.find_element(By.ID, "confirm-ok" if accept else "confirm-cancel").click()
    wait_for(driver, "the dialog to close", lambda d: not displayed(d, "dialog#confirm"))


def polyline_points(driver, sel):
    """The points of every polyline under sel: [[(x, y), ...], ...]."""
    out = []
    for p in css(driver, sel + " polyline"):
        pts = (p.get_attribute("points") or "").split()
        out.append([tuple(float(v) for v in pt.split(",")) for pt in pts])
    return out


def api_get(server, path, token=None):
    h = {"Authorization": "Bearer " + token} if token else {}
    return requests.get(server.admin_url + path, headers=h, timeout=10)


# --- tests ----------------------------------------------------------------------


def test_without_the_admin_token_only_the_login_shows(server, client, driver, shot):
    q = client.new_queue("secret")
    # The API refuses without the token and with a wrong one.
    for token in (None, "wrong-token-0123456789"):
        for path in ("/admin/api/v1/accounts", f"/admin/api/v1/accounts/dev/queues/{q}/statistics",
                     "/admin/api/v1/accounts/dev/events", "/metrics"):
            assert assert_error(api_get(server, path, token), 401)["code"] == "AuthenticationFailed"
    # The files themselves are public: they hold no secret.
    r = requests.get(server.admin_url + "/ui", allow_redirects=False, timeout=10)
    assert r.status_code in (301, 302, 308) and r.headers["Location"].endswith("/ui/")
    r = requests.get(server.admin_url + "/ui/", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "app.js" in r.text and "http://" not in r.text and "https://" not in r.text
    for f, ctype in (("app.js", "javascript"), ("style.css", "text/css")):
        r = requests.get(f"{server.admin_url}/ui/{f}", timeout=10)
        assert r.status_code == 200 and ctype in r.headers["Content-Type"], f
        assert "https://" not in r.text and "http://" not in r.text.replace("http://www.w3.org/2000/svg", ""), \
            f"{f} refers to an external URL"

    driver.get(server.admin_url + "/ui/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(server.admin_url + "/ui/")
    wait_for(driver, "the login form", lambda d: displayed(d, "#login-view"))
    assert not displayed(driver, "#app") and not css(driver, "tr[data-queue]")

    driver.find_element(By.ID, "login").click()
    wait_for(driver, "the empty token's error",
             lambda d: "Enter the admin token" in d.find_element(By.ID, "login-error").text)

    driver.find_element(By.ID, "token").send_keys("wrong-token-0123456789")
    driver.find_element(By.ID, "login").click()
    err = wait_for(driver, "the wrong token's error", lambda d: d.find_element(By.ID, "login-error").text)
    assert "refused" in err and "admin token is not valid" in err, err
    assert displayed(driver, "#login-view") and not displayed(driver, "#app")
    assert not css(driver, "tr[data-queue]") and q not in driver.page_source
    assert driver.execute_script("return sessionStorage.getItem('sluice.adminToken')") is None

    # A wrong token kept in the tab is refused at load as well.
    driver.execute_script("sessionStorage.setItem('sluice.adminToken', 'another-wrong-token-0123')")
    driver.get(server.admin_url + "/ui/")
    wait_for(driver, "the login form with the error",
             lambda d: displayed(d, "#login-view") and "refused" in d.find_element(By.ID, "login-error").text)
    assert not css(driver, "tr[data-queue]") and q not in driver.page_source


def test_login_shows_the_accounts_and_their_queues(server, client, driver, shot):
    q = client.new_queue("listed")
    other, _ = server.admin().new_account("other")
    login(driver, server)
    wait_for(driver, "both accounts", lambda d: css(d, f'#accounts li[data-account="{other}"]'))
    wait_for(driver, f"queue {q}", lambda d: css(d, f'tr[data-queue="{q}"]'))
    # The token is kept for the tab: a reload needs no login.
    driver.refresh()
    wait_for(driver, "the dashboard after a reload", lambda d: displayed(d, "#app") and css(d, f'tr[data-queue="{q}"]'))
    assert not displayed(driver, "#login-view")
    # Another account has its own (no) queues.
    click_account(driver, other)
    wait_for(driver, "the other account's empty list", lambda d: displayed(d, "#no-queues"))
    assert not css(driver, "tr[data-queue]")
    click_account(driver, "dev")
    wait_for(driver, f"queue {q} again", lambda d: css(d, f'tr[data-queue="{q}"]'))
    # Logging out forgets the token and the figures.
    driver.find_element(By.ID, "logout").click()
    wait_for(driver, "the login form", lambda d: displayed(d, "#login-view"))
    assert not css(driver, "tr[data-queue]")
    assert driver.execute_script("return sessionStorage.getItem('sluice.adminToken')") is None


def test_depth_follows_puts_and_is_charted(server, client, page):
    q = client.new_queue("depth")
    await_cell(page, q, "visible", "0")
    for i in range(3):
        client.put_ok(q, f"m{i}")
    await_cell(page, q, "visible", "3")
    queue_button(page, q, "select").click()
    wait_for(page, "the queue's detail", lambda d: displayed(d, "#queue-detail") and text_of(d, "#detail-name") == q)
    wait_for(page, "the detail's visible count", lambda d: text_of(d, "#d-visible") == "3")
    assert client.put_batch(q, ["b1", "b2"]).status_code == 201
    await_cell(page, q, "visible", "5")
    wait_for(page, "the detail's visible count", lambda d: text_of(d, "#d-visible") == "5")
    # Charts: the depth line has several points, and the top one is the
    # latest (5); the puts/s line rose above zero.
    depth = wait_for(page, "points in the depth chart", lambda d: [p for p in polyline_points(d, "#chart-depth")
                                                                      if len(p) >= 2])
    ys = [y for _, y in depth[0]]  # the visible line: 0 or 3, then 5 (up is a smaller y)
    assert ys[-1] == min(ys) < ys[0], ys
    wait_for(page, "a positive rate in the rates chart",
             lambda d: any(y < 149 for line in polyline_points(d, "#chart-rates") for _, y in line))
    assert polyline_points(page, f'tr[data-queue="{q}"] svg.spark')[0], "no sparkline"
    # One receive: one in flight.
    assert len(client.receive_list(q, 1, 60)) == 1
    await_cell(page, q, "in-flight", "1")
    await_cell(page, q, "visible", "4")


def test_peek_shows_bodies_as_text(server, client, page):
    q = client.new_queue("peek")
    body = ('peek <b>bold</b> & "quoted" \'single\' &amp; <img src=x onerror="window.pwned=1"> '
            '<script>window.pwned=2</script> ✓')
    client.put_ok(q, body)
    client.put_ok(q, "second")
    queue_button(page, q, "peek").click()
    bodies = wait_for(page, "the peeked bodies", lambda d: [e.text for e in css(d, "#peek-results pre.body")])
    assert bodies == [body, "second"], bodies
    assert not css(page, "#peek-results b, #peek-results img, #peek-results script")
    assert page.execute_script("return window.pwned") is None
    # Peeking leased nothing.
    assert client.stats_json(q)["inFlight"] == 0
    page.find_element(By.ID, "peek-count").clear()
    page.find_element(By.ID, "peek-count").send_keys("1")
    page.find_element(By.ID, "peek").click()
    wait_for(page, "one peeked message", lambda d: len(css(d, "#peek-results pre.body")) == 1)


def cancel_then_confirm(page, q, button, names, unchanged, notice):
    """Clicks the queue's button and cancels the confirmation (which names
    names): unchanged() must hold; then clicks again, confirms, and awaits
    the notice."""
    queue_button(page, q, button).click()
    confirm(page, False, names)
    assert unchanged(), f"{button} acted although it was cancelled"
    queue_button(page, q, button).click()
    confirm(page, True, names)
    wait_for(page, f"the {button}'s notice", lambda d: text_of(d, "#notice") == notice)


def test_redrive_moves_the_dead_letters_back(server, client, page):
    dlq = client.new_queue("dlq")
    src = client.new_queue("src", maxDeliveryCount=1, dlqName=dlq)
    client.put_ok(src, "dead letter")
    assert len(client.receive_list(src, 1, 1)) == 1
    sleep_until(time.monotonic() + 1.1)  # the lease of 1 s runs out
    # The next receive attempt moves it (maxDeliveryCount 1).
    await_until(lambda: client.receive_list(src, 1, 1) == [] and client.stats_json(dlq)["visible"] == 1,
                timeout=30, desc="the message to be dead-lettered")
    await_cell(page, dlq, "rel", f"DLQ of {src}")
    await_cell(page, dlq, "visible", "1")
    assert not css(page, f'tr[data-queue="{src}"] button.redrive'), "only a DLQ has a redrive button"

    cancel_then_confirm(page, dlq, "redrive", src, lambda: client.stats_json(dlq)["visible"] == 1,
                        f"Moved 1 message from {dlq} to {src}.")
    await_cell(page, src, "visible", "1")
    await_cell(page, dlq, "visible", "0")
    client.await_stats(src, visible=1)
    client.await_stats(dlq, visible=0)
    msgs = client.receive_list(src, 1, 30)
    assert [m["message"] for m in msgs] == ["dead letter"] and msgs[0]["deliveryCount"] == 1


def test_purge_and_delete_ask_first(server, client, page):
    q = client.new_queue("doomed")
    assert client.put_batch(q, ["a", "b"]).status_code == 201
    await_cell(page, q, "visible", "2")

    cancel_then_confirm(page, q, "purge", q, lambda: client.stats_json(q)["visible"] == 2, f"Purged {q}.")
    client.await_stats(q, size=0)
    await_cell(page, q, "visible", "0")

    queue_button(page, q, "delete").click()
    confirm(page, False, q)
    assert_status(client.get_queue(q), 200)
    assert css(page, f'tr[data-queue="{q}"]')
    queue_button(page, q, "delete").click()
    confirm(page, True, q)
    wait_for(page, "the delete's notice", lambda d: text_of(d, "#notice") == f"Deleted {q}.")
    wait_for(page, "the row to go", lambda d: not css(d, f'tr[data-queue="{q}"]'))
    assert assert_error(client.get_queue(q), 404)["code"] == "QueueNotFound"


def page_through(driver, field_values, limit):
    """Queries the event log through the form and pages on to the end:
    (the event ids in page order, the number of rows of each page)."""
    for fid in ("ev-start", "ev-end", "ev-type", "ev-tag"):
        el = driver.find_element(By.ID, fid)
        el.clear()
        el.send_keys(field_values.get(fid, ""))
    driver.find_element(By.ID, "ev-limit").clear()
    driver.find_element(By.ID, "ev-limit").send_keys(str(limit))
    driver.find_element(By.ID, "ev-query").click()
    ids, sizes, n = [], [], 1
    while True:
        wait_for(driver, f"page {n}", lambda d: (text_of(d, "#ev-info") or "").startswith(f"Page {n}:"))
        rows = [r.get_attribute("data-event-id") for r in css(driver, "#events tbody tr")]
        assert len(rows) <= limit
        ids += rows
        sizes.append(len(rows))
        nxt = driver.find_element(By.ID, "ev-next")
        if not nxt.is_enabled():
            assert "the end of the query" in text_of(driver, "#ev-info")
            return ids, sizes
        assert n < 50, "the query does not end"
        nxt.click()
        n += 1


def test_event_log_browser_queries_and_pages_on(server, client, page):
    uid = uuid.uuid4().hex[:10]
    typ, other, tag = f"dash.test.{uid}", f"dash.other.{uid}", f"t{uid}"
    wanted = [{"id": f"e-{uid}-{i}", "type": typ, "tags": [tag, "eu"], "data": {"n": i, "html": "<i>x</i>"}}
              for i in range(7)]
    others = [{"id": f"o-{uid}-{i}", "type": other, "tags": [tag]} for i in range(2)]
    r = assert_status(client.put_events(wanted + others), 200)
    assert all(x["status"] == 201 for x in r.json()["results"]), r.text
    client.await_readable(max(x["recordedAt"] for x in r.json()["results"]))

    ids, sizes = page_through(page, {"ev-type": typ}, 3)
    assert ids == [e["id"] for e in wanted], ids
    assert len(sizes) >= 3, sizes
    assert not css(page, "#events i"), "event data was rendered as markup"

    ids, sizes = page_through(page, {"ev-tag": tag}, 4)
    assert sorted(ids) == sorted(e["id"] for e in wanted + others) and len(ids) == 9, ids
    assert len(sizes) >= 3, sizes

    # A bad value comes back as the API's error.
    page.find_element(By.ID, "ev-start").send_keys("not a time")
    page.find_element(By.ID, "ev-query").click()
    wait_for(page, "the query's error", lambda d: "start" in (text_of(d, "#error") or ""))
    page.find_element(By.ID, "ev-start").clear()

    # Subscriptions are listed with their state.
    q = client.new_queue("sub")
    name = unique_name("sub")
    assert_status(client.create_sub(name, q, filter={"types": [typ]}, start="earliest"), 201)
    sel = f'#subscriptions tr[data-subscription="{name}"]'
    wait_for(page, "the subscription's row with its queue, filter and state",
             lambda d: css(d, sel) and all(s in css(d, sel)[0].text for s in (q, typ, "active")))


def make_traffic(server, seconds):
    """An account "shop" with some traffic for a while, so that the README's
    screenshot has something to show."""
    r = server.admin().create_account("shop")
    assert r.status_code == 201, r.text
    c = server.client("shop", r.json()["keys"]["primary"])
    assert c.create_queue("orders-dlq").status_code == 201
    assert c.create_queue("orders", maxDeliveryCount=2, dlqName="orders-dlq").status_code == 201
    assert c.create_queue("billing").status_code == 201
    # Most messages are acked at once; one of each receive is left to its
    # lease of 3 s, so some are in flight and, after two deliveries,
    # dead-lettered.
    stop, i = time.monotonic() + seconds, 0
    while time.monotonic() < stop:
        i += 1
        for q, n in (("orders", 5 + i % 4), ("billing", 2 + i % 3)):
            c.put_batch(q, [f"{q} {i}.{k}" for k in range(n)])
            for m in c.receive_list(q, max(1, n - 2 + (i // 10) % 3), 3)[1:]:
                c.ack(q, m["popReceipt"])
        time.sleep(0.25)
    c.close()


def test_store_and_server_figures(server, client, page):
    kind = wait_for(page, "the store's kind", lambda d: text_of(d, "#store-kind") not in (None, "–") and
                    text_of(d, "#store-kind"))
    if BACKEND == "cassandra":
        assert kind.startswith("Apache Cassandra"), kind
        wait_for(page, "the nodes' table", lambda d: displayed(d, "#nodes") and css(d, "#nodes tbody tr"))
        assert "up" in css(page, "#nodes tbody tr")[0].text
    else:
        assert kind == "embedded SQLite", kind
        assert not displayed(page, "#nodes")
    wait_for(page, "a rate of HTTP requests", lambda d: (text_of(d, "#http-rate") or "–") != "–")
    wait_for(page, "the throughput chart", lambda d: any(len(p) >= 2 for p in polyline_points(d, "#chart-store")))

    if os.environ.get("SLUICE_UPDATE_SCREENSHOT") == "1":
        t = threading.Thread(target=make_traffic, args=(server, 40))
        t.start()
        click_account(page, "shop")
        queue_button(page, "orders", "select").click()
        t.join()
        page.execute_script("window.scrollTo(0, 0)")
        wait_for(page, "the charts with the traffic", lambda d: len(polyline_points(d, "#chart-rates")) >= 3)
        os.makedirs(os.path.join(REPO, "docs"), exist_ok=True)
        page.save_screenshot(os.path.join(REPO, "docs", "dashboard.png"))
