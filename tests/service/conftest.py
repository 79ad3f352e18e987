"""A real ``mosaic serve`` process on 127.0.0.1 and a small seeded image to serve."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

#: a cluster of threads inside the service process: real futures, nothing outlives a killed service
THREADS = {"kind": "local", "processes": False, "n_workers": 1, "threads_per_worker": 2, "dashboard_address": ":0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_image(path: Path, *, seed: int = 3, shape=(160, 192)) -> Path:
    """Gaussian sources on a sloped sky with noise, a TAN WCS, FILTER and BUNIT."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    data = 0.2 + 0.001 * x + rng.normal(0.0, 0.05, shape)
    for _ in range(12):
        x0, y0, flux, s = rng.uniform(10, nx - 10), rng.uniform(10, ny - 10), rng.uniform(2, 20), rng.uniform(1.2, 3.0)
        data += flux / (2 * np.pi * s * s) * np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * s * s))
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [3.58, -30.39]
    wcs.wcs.crpix = [nx / 2, ny / 2]
    wcs.wcs.cdelt = [-8.5e-6, 8.5e-6]
    header = wcs.to_header()
    header["BUNIT"] = "MJy/sr"
    primary = fits.PrimaryHDU()
    primary.header["FILTER"] = "F200W"
    fits.HDUList([primary, fits.ImageHDU(data.astype(np.float32), header=header, name="SCI")]).writeto(path)
    return path


class Service:
    """A ``mosaic serve`` subprocess in its own process group."""

    def __init__(self, data: Path, store: Path, *, args=(), log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "mosaic", "--log-file", str(log), "serve", "--data", str(data), "--store", str(store),
               "--port", str(self.port), "--cluster", json.dumps(THREADS), *args]
        env = {**os.environ, "MOSAIC_PROGRESS": "0"}
        self.stderr = log.with_suffix(".stderr")
        with self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)
        self.http = httpx.Client(base_url=self.url, timeout=120)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosaic serve exited with {self.proc.returncode}: {self.stderr.read_text()[-3000:]}")
            try:
                if self.http.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("mosaic serve did not answer /health within 90 s")
            time.sleep(0.2)

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=60)
        self.http.close()


@pytest.fixture(scope="session")
def live(tmp_path_factory):
    """One ``mosaic serve`` for the session (a test may replace ``live.service`` with a restarted one).

    Its data directory holds an image (``field/image.fits``), a symlink leading out of it
    (``link.fits``) and a tiny simulated field (``sim/``); ``outside.fits`` and ``elsewhere/``
    (a copy of one exposure) lie beside it. Uploads are limited to 1 MiB.
    """
    from mosaic.simulate import SimConfig, simulate_field

    root = tmp_path_factory.mktemp("service")
    data = root / "data"
    (data / "field").mkdir(parents=True)
    image = write_image(data / "field" / "image.fits")
    outside = write_image(root / "outside.fits", seed=4)
    (data / "link.fits").symlink_to(outside)  # a symlink leading out: never served
    simulate_field(data / "sim", SimConfig(size=96, psf_size=21, n_exposures=3, seed=7, n_galaxies=6, n_stars=3, n_pairs=1,
                                           n_wavelengths=3))
    (root / "elsewhere").mkdir()
    first = sorted((data / "sim").glob("*_cal.fits"))[0]
    (root / "elsewhere" / first.name).write_bytes(first.read_bytes())
    service = Service(data, root / "store.zarr", args=["--max-upload-mb", "1"], log=root / "serve.log")
    box = SimpleNamespace(root=root, data=data, image=image, outside=outside, service=service)
    yield box
    box.service.kill(signal.SIGTERM)


@pytest.fixture
def served(live):
    """``(Service, data dir, image path, outside file)``."""
    return live.service, live.data, live.image, live.outside

def browse(url: str, *, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """``(DOM after the page's scripts ran, console lines)`` of ``url`` in headless chromium (or skip)."""
    import shutil

    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no chromium on this machine (CI installs Debian's chromium: .ci/browser.sh)")
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=15000", "--window-size=1400,1000"]
    if screenshot is not None:
        shot = subprocess.run([*args, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=120)
        assert shot.returncode == 0, shot.stderr[-2000:]
    dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout, [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln]


class Browser:
    """Headless chromium driven over the DevTools protocol on a pipe (fds 3 and 4): no extra package.

    ``evaluate`` runs JavaScript in the page and returns its value; ``errors`` collects console
    errors and uncaught exceptions of the page.
    """

    def __init__(self, url: str):
        import shutil

        browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
        if browser is None:
            pytest.skip("no chromium on this machine (CI installs Debian's chromium: .ci/browser.sh)")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def pipes():  # in the child: the protocol's fds 3 (commands in) and 4 (answers out)
            import fcntl

            # copies above 10 first: a pipe's own fd may already be 3 or 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome_r, from_chrome_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--window-size=1400,1000",
                "about:blank"]
        # close_fds=False: subprocess would close fds 3 and 4 after pipes() made them (this
        # process's own fds are not inheritable, PEP 446, so nothing else leaks)
        self.proc = subprocess.Popen(args, preexec_fn=pipes, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._id = 0
        self.errors: list[str] = []
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self._call("Runtime.enable", session=True)
        self._call("Page.enable", session=True)
        self._call("Page.navigate", {"url": url}, session=True)

    def _message(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def _call(self, method: str, params: dict | None = None, *, session: bool = False) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._message()
            if answer.get("method") == "Runtime.consoleAPICalled" and answer["params"]["type"] == "error":
                self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in answer["params"]["args"]))
            elif answer.get("method") == "Runtime.exceptionThrown":
                self.errors.append(answer["params"]["exceptionDetails"].get("text", "exception"))
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self._call("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                            session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 120):
        """Poll ``expression`` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"still false after {timeout} s: {expression}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self._to_chrome)
        os.close(self._from_chrome)
