"""The documentation site, checked as a reader would meet it: it builds with `mkdocs build --strict` (a broken link,
a missing page or an API reference that no longer resolves fails), no built page links to a page or an anchor that
does not exist, the search index covers every page, every command's --help ends with its docs page, and in headless
Chromium the index and two guide pages render with their navigation and figures and the search finds pages.

Set CBAMLAB_DOCS_SCREENSHOTS=DIR to keep the screenshots the browser test takes."""
import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest
import yaml

from cbamlab.cli import build_parser

from headless import Browser, find_chromium

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def nav_pages(nav=None) -> list[str]:
    if nav is None:
        config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
        nav = config["nav"]
    out = []
    for item in nav:
        for value in item.values():
            out += nav_pages(value) if isinstance(value, list) else [value]
    return out


def page_url(md: str) -> str:
    """compare.md -> compare.html (mkdocs.yml: use_directory_urls: false), api/models.md -> api/models.html."""
    return md[:-len(".md")] + ".html"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs tools are not installed: pip install -e '.[docs]'")
    pytest.importorskip("material", reason="mkdocs-material is not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.links.append(attrs["src"])


@functools.lru_cache(maxsize=None)
def parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def target_file(site: Path, page: Path, link: str) -> Path:
    path = unquote(urlsplit(link).path)
    base = site if path.startswith("/") else page.parent  # 404.html links from the site's root
    target = (base / path.lstrip("/")).resolve() if path else page
    return target / "index.html" if target.is_dir() else target


def test_every_page_of_the_nav_is_built(site):
    pages = nav_pages()
    assert len(pages) >= 12
    missing = [md for md in pages if not (site / page_url(md)).is_file()]
    assert not missing, f"pages in mkdocs.yml's nav that were not built: {missing}"
    unlisted = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if str(p.relative_to(DOCS)) not in pages)
    assert not unlisted, f"pages in docs/ that the nav does not list: {unlisted}"


def test_no_built_page_has_a_broken_internal_link(site):
    broken = []
    for page in sorted(site.rglob("*.html")):
        for link in parse(page).links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
                continue
            target = target_file(site, page, link)
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: {link} (no {target})")
                continue
            anchor = urldefrag(link).fragment
            if anchor and target.suffix == ".html" and unquote(anchor) not in parse(target).ids:
                broken.append(f"{page.relative_to(site)}: {link} (no id '{anchor}' in {target.relative_to(site)})")
    assert not broken, "\n".join(broken)


def test_the_search_index_covers_every_page(site):
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    locations = {doc["location"].split("#")[0] for doc in index["docs"]}
    missing = [md for md in nav_pages() if page_url(md) not in locations]
    assert not missing, f"pages missing from the search index: {missing}"


README_LINK = re.compile(r"\]\(((?:docs|results)/[^)\s]+)\)")


def test_the_readmes_links_reach_pages_and_anchors_of_the_site(site):
    """The README links into docs/*.md (which GitHub shows too); each file exists and each anchor is one the site
    builds for that page."""
    broken = []
    for link in README_LINK.findall((ROOT / "README.md").read_text(encoding="utf-8")):
        path, anchor = urldefrag(link)
        if not (ROOT / path).is_file():
            broken.append(f"{link}: no file {path}")
        elif anchor:
            built = site / page_url(path[len("docs/"):])
            if anchor not in parse(built).ids:
                broken.append(f"{link}: the site's {built.relative_to(site)} has no id '{anchor}'")
    assert not broken, "\n".join(broken)


def _commands():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sub.choices


@pytest.mark.parametrize("name", list(_commands()))
def test_every_commands_help_ends_with_its_docs_page(name, site):
    lines = [ln for ln in _commands()[name].format_help().splitlines() if ln.strip()]
    match = re.fullmatch(r"docs: (docs/\S+\.md)(?:#(\S+))?", lines[-1].strip())
    assert match, f"cbamlab {name} --help ends with {lines[-1]!r}, not 'docs: docs/PAGE.md'"
    page, anchor = match.groups()
    assert (ROOT / page).is_file(), f"cbamlab {name} --help points to {page}, which does not exist"
    assert page[len("docs/"):] in nav_pages(), f"{page} is not in mkdocs.yml's nav"
    if anchor:
        built = site / page_url(page[len("docs/"):])
        assert anchor in parse(built).ids, f"cbamlab {name} --help points to #{anchor}, which {page} lacks"


# --- in the browser -----------------------------------------------------------------------------------------------

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium: install Debian's chromium package (apt-get install chromium; .ci/run does)")

# page, a figure it must show
RENDERED = [("index.md", "fashion_mnist-budget.png"),
            ("getting-started.md", "digits-accuracy.png"),
            ("compare.md", "digits-minutes.png")]

PAGE_FACTS = """(() => {
  const nav = [...document.querySelectorAll("nav.md-nav--primary a.md-nav__link")];
  const h1 = document.querySelector("article h1");
  return {
    title: document.title,
    h1: h1 ? h1.firstChild.textContent.trim() : null,
    nav: nav.map(a => a.textContent.trim()),
    navVisible: nav.filter(a => a.getBoundingClientRect().width > 0).length,
    images: [...document.querySelectorAll("article img")].map(i => ({
      src: i.currentSrc, loaded: i.complete && i.naturalWidth > 0, width: i.getBoundingClientRect().width})),
    search: !!document.querySelector("input.md-search__input"),
  };
})()"""


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.func.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    keep = os.environ.get("CBAMLAB_DOCS_SCREENSHOTS")
    out = Path(keep) if keep else tmp_path_factory.mktemp("screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


@needs_chromium
@pytest.mark.parametrize("md,figure", RENDERED, ids=[p for p, _ in RENDERED])
def test_pages_render_with_their_navigation_and_figures(served, browser, screenshots, md, figure):
    browser.open(served + page_url(md))
    facts = browser.evaluate(PAGE_FACTS)
    browser.screenshot(screenshots / f"{md[:-3]}.png")
    heading = (DOCS / md).read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
    assert facts["h1"] == heading and facts["title"].startswith(heading), facts
    assert facts["search"], "no search box"
    assert {"Getting started", "Results", "Design and extending", "Changelog"} <= set(facts["nav"]), facts["nav"]
    assert facts["navVisible"] >= 10, f"only {facts['navVisible']} navigation links are visible"
    broken = [i["src"] for i in facts["images"] if not i["loaded"] or i["width"] < 100]
    assert not broken, f"figures that did not load or show: {broken}"
    assert any(i["src"].endswith(figure) for i in facts["images"]), (figure, facts["images"])
    browser.evaluate(f"document.querySelector('article img[src$=\"{figure}\"]').scrollIntoView({{block: 'center'}})")
    time.sleep(0.5)  # the header's title changes with a transition on scrolling
    browser.screenshot(screenshots / f"{md[:-3]}-figure.png")


@needs_chromium
def test_the_search_finds_the_statistics_page(served, browser, screenshots):
    browser.open(served + "?q=sign-flip")
    found = browser.wait_for('[...document.querySelectorAll(".md-search-result__item a")]'
                             '.map(a => new URL(a.href).pathname)', timeout=60)
    browser.screenshot(screenshots / "search.png")
    assert found, "the search gave no result for 'sign-flip'"
    assert "/compare.html" in found, found
