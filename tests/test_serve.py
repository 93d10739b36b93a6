"""`omni-gpt2o serve`: the JSON endpoint and its limits (FastAPI's test client), the queue, a real server under
a burst of 50 requests, and the page in headless Chromium (Debian's chromium + chromedriver)."""

import asyncio
import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omni_gpt2o.checkpoint import save_checkpoint
from omni_gpt2o.pipeline import OmniGPT2oPipeline
from omni_gpt2o.serve import Busy, Drawer, ServeLimits, create_app

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from omni_gpt2o.model import build_model
    from tests.conftest import MICRO

    torch.manual_seed(0)
    model = build_model(MICRO)
    torch.nn.init.normal_(model.decoder.conv_out.weight, std=0.3)  # untrained, but pictures that vary
    return save_checkpoint(model, tmp_path_factory.mktemp("serve") / "ckpt")


@pytest.fixture(scope="module")
def pipe(checkpoint):
    return OmniGPT2oPipeline.from_pretrained(checkpoint, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def client(pipe):
    from fastapi.testclient import TestClient

    return TestClient(create_app(pipe, ServeLimits(max_steps=20)), raise_server_exceptions=False)


def _picture(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def test_generate_returns_a_png_and_the_seed_that_draws_it_again(client):
    first = client.post("/generate", json={"prompt": "a red circle at the top", "steps": 3, "intermediates": True})
    assert first.status_code == 200
    data = first.json()
    assert _picture(data["image"]).shape == (32, 32, 3) and len(data["intermediates"]) == 3
    again = client.post("/generate", json={"prompt": "a red circle at the top", "steps": 3, "seed": data["seed"]})
    assert again.json()["image"] == data["image"] and again.json()["intermediates"] == []
    raw = client.post("/generate?format=png", json={"prompt": "a red circle at the top", "steps": 3,
                                                    "seed": data["seed"]})
    assert raw.headers["content-type"] == "image/png" and raw.headers["x-seed"] == str(data["seed"])
    assert base64.b64encode(raw.content).decode() == data["image"]
    several = client.post("/generate", json={"prompt": "a red circle", "steps": 2, "num_images": 3}).json()
    assert len(set(several["images"])) == 3 and several["image"] == several["images"][0]


def test_a_draft_picture_is_used_and_a_bad_one_refused_in_one_line(client, pipe):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(buffer, format="PNG")
    red = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    body = {"prompt": "a red square", "steps": 2, "seed": 1, "draft": "picture", "strength": 0.1}
    seen = []
    hook = pipe.model.image_encoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    assert client.post("/generate", json={**body, "picture": red}).status_code == 200
    hook.remove()
    first = seen[0]  # the first draft the model sees: the red picture, lightly noised
    assert (first[:, 0] - first[:, 1]).mean() > 1.0
    for picture, message in [(None, "needs a picture"), ("not base64!", "base64"),
                             (base64.b64encode(b"\x89PNG broken").decode(), "could not be read")]:
        answer = client.post("/generate", json={**body, "picture": picture})
        assert answer.status_code == 400 and message in answer.json()["error"]


@pytest.mark.parametrize("body, field", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "x" * 2001}, "prompt"),
    ({"prompt": "a red circle", "steps": 21}, "steps"),
    ({"prompt": "a red circle", "steps": 0}, "steps"),
    ({"prompt": "a red circle", "guidance": 1e9}, "guidance"),
    ({"prompt": "a red circle", "seed": -1}, "seed"),
    ({"prompt": "a red circle", "draft": "magic"}, "draft"),
    ({"prompt": "a red circle", "strength": 0}, "strength"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": "a red circle", "num_images": 5}, "num_images"),
    ({"prompt": "a red circle", "batch": 64}, "batch"),
])
def test_limits_are_enforced_on_the_server_in_one_line(client, body, field):
    answer = client.post("/generate", json=body)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error.startswith(field) and "\n" not in error and "Traceback" not in error


def test_nan_guidance_and_a_huge_body_are_refused(client):
    nan = client.post("/generate", content='{"prompt": "a red circle", "guidance": NaN}',
                      headers={"content-type": "application/json"})
    assert nan.status_code == 422 and "guidance" in nan.json()["error"]
    huge = client.post("/generate", content=b"x" * (12 * 2**20), headers={"content-type": "application/json"})
    assert huge.status_code == 413
    streamed = client.post("/generate", content=iter([b'{"prompt": "a red circle"}']),
                           headers={"content-type": "application/json"})
    assert streamed.status_code == 411  # no Content-Length: refused before the body is read


def test_russian_prompts_draw_and_the_page_is_served(client):
    answer = client.post("/generate", json={"prompt": "Космический кот на Марсе", "steps": 2})
    assert answer.status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'id="generate"' in page.text and "http" not in page.text.split("<script>")[1]
    assert client.get("/info").json()["limits"]["max_steps"] == 20


def test_the_queue_is_bounded_and_a_full_one_answers_busy(pipe):
    """One drawing, `queue` waiting: the next is refused at once, and the queue does not grow."""
    gate = threading.Event()

    class GatedDrawer(Drawer):
        def draw(self, request):
            gate.wait(10)
            return super().draw(request)

    async def burst():
        drawer = GatedDrawer(pipe, ServeLimits(queue=2))
        request = type("R", (), dict(prompt="a red circle", seed=0, steps=1, guidance=1.0, draft="noise",
                                     picture=None, strength=1.0, intermediates=False, num_images=1))()
        admitted = [asyncio.create_task(drawer(request)) for _ in range(3)]  # one drawing, two waiting
        await asyncio.sleep(0.2)
        with pytest.raises(Busy):
            await drawer(request)
        assert drawer.admitted == 3
        gate.set()
        results = await asyncio.gather(*admitted)
        assert drawer.admitted == 0 and len({r["image"] for r in results}) == 1
        await drawer(request)  # free again

    asyncio.run(burst())


# --- a real server -------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(checkpoint):
    """`omni-gpt2o serve` in its own process; its URL and process."""
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "omni_gpt2o", "serve", "--checkpoint", str(checkpoint),
                                "--port", str(port), "--device", "cpu", "--precision", "fp32", "--queue", "4"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/info", timeout=1).read()
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"the server exited: {process.stdout.read()}")
            time.sleep(0.1)
    yield url, process
    process.terminate()
    process.wait(10)


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/generate", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's memory from /proc")
def test_a_burst_of_50_requests_all_get_an_answer_and_the_server_stays_up(server):
    url, process = server
    _post(url, {"prompt": "warm up", "steps": 1})
    before, peak, done = _rss_mb(process.pid), [0.0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb(process.pid))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda i: _post(url, {"prompt": f"a red circle number {i}", "steps": 8}), range(50)))
    done.set()
    watcher.join()
    codes = [code for code, _ in answers]
    assert set(codes) <= {200, 503} and codes.count(200) >= 5  # a picture or "busy", nothing else
    assert all("busy" in body["error"] for code, body in answers if code == 503)
    assert peak[0] - before < 500, f"resident memory grew by {peak[0] - before:.0f} MB"
    assert process.poll() is None and _post(url, {"prompt": "still there?", "steps": 2})[0] == 200


# --- the page in a browser -----------------------------------------------------------------------------------

@pytest.fixture
def browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        reason = f"the browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def test_the_page_draws_a_prompt_in_a_real_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    browser.get(url)
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "size").text == "32")
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("a blue square at the bottom right")
    browser.find_element(By.ID, "seed").send_keys("7")
    browser.find_element(By.ID, "generate").click()
    picture = browser.find_element(By.ID, "picture")
    WebDriverWait(browser, 60).until(lambda d: (picture.get_attribute("src") or "").startswith("data:image/png")
                                     and d.execute_script("return arguments[0].naturalWidth", picture) > 0)
    browser.save_screenshot(str(tmp_path / "page.png"))
    assert browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", picture) == \
        [32, 32]
    pixels = _picture(picture.get_attribute("src").split(",", 1)[1])
    assert pixels.std() > 5, "a blank picture"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#steps-strip img")) == 8
    assert browser.find_element(By.ID, "seed-used").text == "seed 7"
    assert (tmp_path / "page.png").stat().st_size > 0

    # A limit the page does not enforce (steps past the maximum, set behind its back) comes back as a message.
    browser.execute_script("document.getElementById('steps').removeAttribute('max');"
                           "document.getElementById('steps').value = 999;")
    browser.find_element(By.ID, "generate").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "error").text)
    error = browser.find_element(By.ID, "error").text
    assert error.startswith("steps") and "Traceback" not in error
