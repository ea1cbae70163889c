"""The dashboard tests' browser: Debian's headless Chromium driven by Selenium through
Debian's chromedriver, one session per test module.

Screenshots go to ``$CARTE_TEST_ARTIFACTS/ui/`` (default /tmp/carte-test-artifacts/ui/).
`NetnsForward` makes a dashboard that listens on a network namespace's loopback (a cluster
lab node) reachable from the host's browser.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from support.containers import wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("CARTE_TEST_ARTIFACTS", "/tmp/carte-test-artifacts")) / "ui"
CLONE_NEWNET = 0x40000000


def open_browser() -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,860",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def login(browser: WebDriver, base: str, token_file: Path) -> None:
    """Open the dashboard, which sends a fresh browser to the login form, and log in."""
    browser.get(f"{base}/ui/nodes")
    assert browser.current_url.startswith(f"{base}/ui/login"), browser.current_url
    browser.find_element(By.ID, "token").send_keys(token_file.read_text().strip())
    browser.find_element(By.ID, "login").click()
    wait_until(lambda: browser.current_url == f"{base}/ui/nodes", 10, "the nodes page")


def heading(browser: WebDriver) -> str:
    return str(browser.find_element(By.TAG_NAME, "h1").text)


def shoot(browser: WebDriver, name: str) -> Path:
    """Save a screenshot of the whole page as ARTIFACTS/NAME.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1280, max(860, min(int(height) + 40, 2400)))
    browser.save_screenshot(str(path))
    browser.set_window_size(1280, 860)
    return path


class NetnsForward:
    """A host TCP port relayed to ``127.0.0.1:port`` inside network namespace ``namespace``.

    Sockets keep the namespace they were made in, so one worker thread enters the namespace
    (setns) and makes every upstream connection; the relaying runs in plain threads.
    """

    def __init__(self, namespace: str, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self._inside = ThreadPoolExecutor(1, initializer=_enter_netns, initargs=(namespace,))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = self._inside.submit(socket.create_connection, self.target, 10).result()
            except OSError:
                client.close()
                continue
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._inside.shutdown(wait=False)


def _enter_netns(namespace: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
    finally:
        os.close(fd)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()
