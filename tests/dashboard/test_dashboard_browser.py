"""The dashboard in a real headless browser (issue 20): sign in with a token from `saas-cli dashboard`, see the
network, upload a file, submit the a + b job from the form built from its descriptor, watch its progress reach
100 % (server-sent events), download the output, open its provenance graph; an anonymous visitor cannot see a
restricted object; a reused or expired token is refused; the Health page shows every node (and a stopped one's last
known health) and this node's diagnostics, with the owner's parts for the node owner only. Screenshots of each page
go to the test's temp folder."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_support import start_chromium

from saas import __version__
from saas.core.keystore import Keystore
from tests.dashboard.dashboard_support import dashboard_cli, rti_env
from tests.rti.rti_support import RTIEnv
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def env(node_factory: Callable[..., Any], keystores: Callable[[str], Keystore], tmp_path: Path) -> RTIEnv:
    return rti_env(node_factory, keystores, tmp_path, "abc", "fail")


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator[Callable[[str], Any]]:
    """`browsers(name)`: a new headless Chromium with its own empty profile."""
    started: list[Any] = []

    def start(name: str) -> Any:
        started.append(start_chromium(tmp_path / f"profile-{name}", tmp_path / f"downloads-{name}"))
        return started[-1]

    yield start
    for driver in started:
        driver.quit()


def login_url(env: RTIEnv, user: Keystore, tmp_path: Path, lifetime: float = 120) -> str:
    """The sign-in URL printed by the real `saas-cli dashboard`."""
    host, port = env.node.address
    result = dashboard_cli(user, env.node, tmp_path, "--lifetime", str(lifetime))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["iid"] == user.iid and document["node_iid"] == env.node.node.iid
    assert document["url"].startswith(f"http://{host}:{port}/#login=")
    return str(document["url"])


def wait_for(driver: Any, css: str, text: str | None = None, timeout: float = 30) -> Any:
    """The first element matching `css` (whose text contains `text`, if given), waiting for it to appear."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def found() -> Any:  # re-read, not re-request: the page updates itself
        return next((e for e in driver.find_elements(By.CSS_SELECTOR, css) if text is None or text in e.text), None)

    return wait_until(
        found,
        timeout,
        interval=0.1,
        what=f"'{css}' with {text!r}",
        ignore=(StaleElementReferenceException,),
        detail=lambda: f"on {driver.current_url}:\n{driver.page_source[:3000]}",
    )


def on(driver: Any, css: str, action: Callable[[Any], Any], text: str | None = None, timeout: float = 30) -> Any:
    """`action(element)` on the element `wait_for` finds, again on a fresh one if the page replaced it meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            return action(wait_for(driver, css, text, timeout))
        except StaleElementReferenceException:
            if time.monotonic() > deadline:
                raise


def text_of(driver: Any, css: str) -> str:
    return str(on(driver, css, lambda e: e.text))


def click(driver: Any, css: str, text: str | None = None) -> None:
    on(driver, css, lambda e: e.click(), text)


def page(driver: Any, hash_route: str, name: str) -> None:
    driver.execute_script("location.hash = arguments[0]", hash_route)
    wait_for(driver, f"main[data-page='{name}']")


def test_sign_in_upload_submit_watch_download_and_provenance(
    env: RTIEnv, browsers: Callable[[str], Any], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    proc_id = env.deploy("abc")
    alice = env.alice
    shots = tmp_path / "screenshots"
    shots.mkdir()
    browser = browsers("alice")

    # sign in with the token; the network page shows this node
    url = login_url(env, alice, tmp_path)
    browser.get(url)
    wait_for(browser, "#who-name", "alice")
    assert "login=" not in browser.current_url  # the token left the address bar
    wait_for(browser, "#network-table", env.node.node.iid[:10])
    assert text_of(browser, "#node-iid") == env.node.node.iid
    browser.save_screenshot(str(shots / "network.png"))

    # upload a file (public: it is input a)
    a_file = tmp_path / "a.json"
    a_file.write_text(json.dumps({"v": 1}))
    page(browser, "#upload", "upload")
    browser.find_element(By.CSS_SELECTOR, "#upload-form input[name=file]").send_keys(str(a_file))
    browser.find_element(By.CSS_SELECTOR, "#upload-form textarea[name=tags]").send_keys("role=input-a")
    browser.save_screenshot(str(shots / "upload.png"))
    browser.find_element(By.CSS_SELECTOR, "#upload-form button").click()
    a_id = text_of(browser, "#object-id")
    assert len(a_id) == 64
    meta = json.loads(on(browser, "#object-meta", lambda e: e.get_attribute("textContent")))
    assert meta["owner_iid"] == alice.iid and meta["tags"] == {"role": "input-a"}
    wait_for(browser, "#object-summary", "public")
    browser.save_screenshot(str(shots / "object.png"))

    # the processor's form: a by reference (the upload), b by value, checked against data_schema as typed
    page(browser, "#processors", "processors")
    browser.save_screenshot(str(shots / "processors.png"))
    click(browser, f"a.proc-link[data-proc='{proc_id}']")
    wait_for(browser, "#job-form")
    Select(browser.find_element(By.ID, "kind-a")).select_by_value("reference")
    wait_for(browser, f"#ref-a option[value='{a_id}']")
    Select(browser.find_element(By.ID, "ref-a")).select_by_value(a_id)
    value_b = browser.find_element(By.ID, "value-b")
    value_b.send_keys('{"v": "two"}')
    wait_for(browser, "#errors-b li", "must be number")
    value_b.clear()
    value_b.send_keys('{"v": 2}')
    browser.find_element(By.NAME, "restricted-c").click()  # the output: restricted to alice
    browser.save_screenshot(str(shots / "submit.png"))
    assert not browser.find_elements(By.CSS_SELECTOR, "#errors-b li")
    browser.find_element(By.ID, "submit-job").click()

    # the job page follows the job live (server-sent events) to 100 %
    wait_for(browser, "#job-state", "successful", timeout=60)
    assert text_of(browser, "#job-percent") == "100 %"
    assert browser.find_element(By.ID, "job-progress").get_attribute("value") == "100"
    wait_for(browser, "#job-messages li", "1 + 2 = 3")
    browser.find_element(By.ID, "follow-log").click()
    wait_for(browser, "#job-log", "Run processor.py")
    browser.save_screenshot(str(shots / "job.png"))

    # the output: download it, then its provenance graph
    c_id = on(browser, "a.output-link", lambda e: e.get_attribute("data-obj"))
    click(browser, "a.output-link")
    wait_for(browser, "#object-id", c_id)
    wait_for(browser, "#object-summary", "test-proc")  # produced by the job's processor
    browser.find_element(By.ID, "download").click()
    downloads = tmp_path / "downloads-alice"
    wait_until(
        lambda: [p for p in downloads.glob("*") if not p.name.endswith(".crdownload")],
        30,
        interval=0.1,
        what="the download",
    )
    [downloaded] = list(downloads.glob("*"))
    assert json.loads(downloaded.read_text()) == {"v": 3}
    # grant bob access to the restricted output, then revoke it
    browser.find_element(By.CSS_SELECTOR, "#grant-form input[name=iid]").send_keys(env.bob.iid)
    browser.find_element(By.CSS_SELECTOR, "#grant-form button").click()
    wait_for(browser, "#access-table", env.bob.iid)
    with env.dor(env.bob) as dor:
        meta = dor.get_meta(c_id)
        assert meta is not None and env.bob.iid in meta.access
    browser.save_screenshot(str(shots / "access.png"))
    click(browser, "#access-table button.revoke")
    wait_until(
        lambda: env.bob.iid not in text_of(browser, "#access-table"), 10, interval=0.1, what="bob's access revoked"
    )
    with env.dor(env.alice) as dor:
        meta = dor.get_meta(c_id)
        assert meta is not None and meta.access == [alice.iid]
    browser.find_element(By.ID, "provenance-link").click()
    wait_for(browser, "#provenance-graph svg")
    boxes = browser.find_elements(By.CSS_SELECTOR, "#provenance-graph g.gnode")
    kinds = sorted(b.get_attribute("class").split()[1] for b in boxes)
    assert kinds == ["data", "data", "data", "step"]  # a, b (by value) -> abc -> c
    click(browser, "#provenance-graph g.step", "test-proc")
    wait_for(browser, "#provenance-detail", "verified")
    browser.save_screenshot(str(shots / "provenance.png"))

    # data objects: a search for the input by its tag
    page(browser, "#objects", "objects")
    wait_for(browser, f"#objects-table a[data-obj='{c_id}']")
    browser.find_element(By.CSS_SELECTOR, "#search-form input[name=patterns]").send_keys("input-a")
    browser.find_element(By.CSS_SELECTOR, "#search-form button").click()
    wait_until(
        lambda: not browser.find_elements(By.CSS_SELECTOR, f"a[data-obj='{c_id}']"),
        10,
        interval=0.1,
        what="the search to replace the list",
    )
    wait_for(browser, f"#objects-table a[data-obj='{a_id}']")
    assert not browser.find_elements(By.CSS_SELECTOR, f"a[data-obj='{c_id}']")
    browser.save_screenshot(str(shots / "objects.png"))

    # jobs list
    page(browser, "#jobs", "jobs")
    wait_for(browser, "#jobs-table a.job-link")
    browser.save_screenshot(str(shots / "jobs.png"))

    # an anonymous visitor: the public input is listed, the restricted output is not, and its page says so
    anonymous = browsers("anonymous")
    anonymous.get(env.node.url + "/#objects")
    wait_for(anonymous, "#who-name", "Anonymous")
    wait_for(anonymous, f"#objects-table a[data-obj='{a_id}']")
    assert not anonymous.find_elements(By.CSS_SELECTOR, f"a[data-obj='{c_id}']")
    page(anonymous, f"#object/{c_id}", "object")
    wait_for(anonymous, "main .note.error")
    assert not anonymous.find_elements(By.ID, "object-meta")
    anonymous.save_screenshot(str(shots / "anonymous.png"))

    # the token already used: refused, the visitor stays anonymous
    reused = browsers("reused")
    reused.get(url)
    wait_for(reused, "#banner .error", "already used")
    wait_for(reused, "#who-name", "Anonymous")
    reused.save_screenshot(str(shots / "reused-token.png"))
    for name in ("network", "upload", "object", "objects", "processors", "submit", "job", "provenance", "anonymous"):
        assert (shots / f"{name}.png").stat().st_size > 1000


def test_an_expired_token_is_refused(env: RTIEnv, browsers: Callable[[str], Any], tmp_path: Path) -> None:
    url = login_url(env, env.alice, tmp_path, lifetime=1)
    time.sleep(1.5)  # time passing is the behaviour: the token expires
    browser = browsers("late")
    browser.get(url)
    wait_for(browser, "#banner .error", "expired")
    wait_for(browser, "#who-name", "Anonymous")
    browser.save_screenshot(str(tmp_path / "expired-token.png"))
    page(browser, "#jobs", "jobs")
    wait_for(browser, "main", "Sign in to see your jobs")


def health_requests(env: RTIEnv) -> float:
    """How many `GET /db/health` requests the node has answered (its /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(env.node.url + "/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "saas_http_request_duration_seconds_count" and sample.labels["route"].endswith("/db/health")
    )


def test_health_page_and_diagnostics(
    env: RTIEnv, browsers: Callable[[str], Any], node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    import logging

    ok, bad = env.deploy("abc"), env.deploy("fail")
    markup = "<img src=x onerror=alert(1)>"  # the last error, shown as text: never an element
    logging.getLogger("saas.test").error(f"dashboard marker {markup}")
    for job in [env.submit_abc(ok), env.submit_abc(ok), env.submit_abc(bad)]:
        env.wait(job)
    node = env.node.node
    carol = node_factory("carol", boot_node="{}:{}".format(*node.p2p.address), node_type="storage")
    wait_until(
        lambda: any(n.identity.id == carol.node.iid and n.online for n in node.nodedb.network()),
        20,
        interval=0.1,
        what="carol to join",
    )
    shots = tmp_path / "screenshots"
    shots.mkdir()

    # anyone: one card per node, this one with its jobs, processors and job times
    anonymous = browsers("anonymous")
    anonymous.get(env.node.url + "/#health")
    mine = f"section.card[data-iid='{node.iid}']"
    card = wait_for(anonymous, mine, "reachable").text
    for expected in (__version__, "successful: 2", "failed: 1", "dor, rti", "test-proc-fail", ok[:10], "(2 jobs)"):
        assert expected in card, (expected, card)
    assert f"saas.test: dashboard marker {markup}" in card and "free of" in card and "cores, load" in card
    assert not anonymous.find_elements("css selector", "main img")
    wait_for(anonymous, f"section.card[data-iid='{carol.node.iid}']", "reachable")
    assert "2 of 2 nodes answered" in text_of(anonymous, "#health-status")
    anonymous.save_screenshot(str(shots / "health.png"))

    # carol stops: after a refresh her card shows since when she does not answer and her last known health
    carol.stop()
    click(anonymous, "#health-refresh")
    theirs = f"section.card[data-iid='{carol.node.iid}']"
    card = wait_for(anonymous, theirs, "unreachable since").text
    assert "Last known health" in card and __version__ in card and "Services dor" in card and "dor, rti" not in card
    wait_for(anonymous, "#health-status", "1 of 2 nodes answered")
    anonymous.save_screenshot(str(shots / "health-unreachable.png"))

    # the public diagnostics: failures by processor, no reasons, no job IDs, no log lines
    click(anonymous, f"{mine} a.diag-link")
    wait_for(anonymous, "main[data-page='diagnostics']")
    left_health = time.monotonic()
    asked = health_requests(env)
    wait_for(anonymous, "#diag-scope", "public part")
    assert "owner only" in text_of(anonymous, "#diag-failures")
    assert bad[:10] in text_of(anonymous, "#diag-failures")
    assert not anonymous.find_elements("css selector", "#diag-logs, #diag-slowest a[href^='#job/']")
    anonymous.save_screenshot(str(shots / "diagnostics-public.png"))

    # the node owner, signed in: the reasons, job IDs and the node's last log lines
    owner = browsers("owner")
    owner.get(login_url(env, env.owner, tmp_path))
    wait_for(owner, "#health-summary", "successful: 2")  # this node's line on the network page
    page(owner, "#diagnostics", "diagnostics")
    wait_for(owner, "#diag-scope", "node owner")
    assert "owner only" not in text_of(owner, "#diag-failures")
    wait_for(owner, "#diag-slowest a[href^='#job/']")
    assert f"ERROR saas.test: dashboard marker {markup}" in text_of(owner, "#diag-logs")
    assert not owner.find_elements("css selector", "main img")
    owner.save_screenshot(str(shots / "diagnostics-owner.png"))

    # left, the Health page asks no more (its auto-refresh is every 15 s)
    time.sleep(max(0.0, 16 - (time.monotonic() - left_health)))  # a quiet period: one auto-refresh interval
    assert health_requests(env) == asked
