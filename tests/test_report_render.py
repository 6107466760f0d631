"""The report document model and its two renderers (report/document.py, report/render.py): every report is a
Document that one markdown and one HTML renderer write, and every figure becomes PNG through one helper."""
import base64
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from cbamlab.report import render
from cbamlab.report.document import Bullets, Details, Document, Figure, Note, Section, Table, Text, slug
from cbamlab.report.mpl import DPI, plt, png_bytes

REPORT = Path(__file__).resolve().parents[1] / "cbamlab" / "report"


def a_png(width_in=2.0, height_in=1.0) -> bytes:
    fig, ax = plt.subplots(figsize=(width_in, height_in))
    ax.plot([0, 1], [0, 1])
    return png_bytes(fig)


def a_document(png: bytes) -> Document:
    return Document("A report", [Text("Made from `runs/x` by **me**."), Text("How to read: a < b.", css="howto")], [
        Section("First", [Note(["one", "two"]), Table(["a", "b|c"], [["1", "x|y"], ["`k`", "2"]], css="main"),
                          Bullets([]), Bullets(["said", "done"]), Figure("f.png", "A caption.", png),
                          Details("Full recipe", "a: 1\n", "yaml")], anchor="first"),
        Section("Plain", [Figure("g.png", "", png)])])


def test_markdown_is_one_blank_line_after_every_heading_and_block():
    md = render.markdown(a_document(b"png"))
    assert md == "\n".join([
        "# A report", "", "Made from `runs/x` by **me**.", "", "How to read: a < b.", "",
        "## First", "", "> one", "> two", "",
        "| a | b\\|c |", "|---|---|", "| 1 | x\\|y |", "| `k` | 2 |", "",
        "- said", "- done", "",  # the empty list is left out
        "![A caption.](figures/f.png)", "", "*A caption.*", "",
        "<details><summary>Full recipe</summary>", "", "```yaml", "a: 1", "```", "", "</details>", "",
        "## Plain", "", "![g.png](figures/g.png)", ""])
    assert render.markdown(a_document(b"png"), figures_dir="").count("](f.png)") == 1  # figures beside the file


def test_html_is_one_self_contained_page_with_the_same_blocks():
    png = a_png()
    page = render.html(a_document(png))
    assert page.startswith("<!DOCTYPE html>") and page.count("<style>") == 1 and page.endswith("</body></html>\n")
    assert "<p>Made from <code>runs/x</code> by <strong>me</strong>.</p>" in page
    assert '<p class="howto">How to read: a &lt; b.</p>' in page
    assert '<h2 id="first">First</h2>' in page and "<h2>Plain</h2>" in page
    assert '<p class="note">one</p><p class="note">two</p>' in page
    assert '<table class="results main">' in page and "<td>x|y</td>" in page and "<td><code>k</code></td>" in page
    assert "<ul><li>said</li><li>done</li></ul>" in page and page.count("<ul>") == 1
    assert "<details><summary>Full recipe</summary><pre>a: 1\n</pre></details>" in page
    embedded = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)">', page)
    assert [alt for alt, _ in embedded] == ["A caption.", "g.png"]
    assert all(base64.b64decode(data) == png for _, data in embedded)
    assert "<figcaption>A caption.</figcaption>" in page and page.count("<figcaption>") == 1
    assert not re.search(r'(src|href)="(?!data:)', page) and "<link" not in page


def test_write_puts_markdown_html_and_figures_on_disk(tmp_path):
    png = a_png()
    written = render.write(a_document(png), tmp_path / "out", "report")
    assert written.markdown == tmp_path / "out" / "report.md" and written.html == tmp_path / "out" / "report.html"
    assert [p.name for p in written.figures] == ["f.png", "g.png"]
    assert all(p.parent == tmp_path / "out" / "figures" and p.read_bytes() == png for p in written.figures)
    assert written.markdown.read_text(encoding="utf-8") == render.markdown(a_document(png))


def test_one_png_helper_with_one_dpi():
    with Image.open(io.BytesIO(a_png(2.0, 1.0))) as image:
        assert image.size == (2 * DPI, DPI)
        assert np.asarray(image).std() > 0  # something was drawn


def test_no_report_module_has_a_renderer_or_a_png_helper_of_its_own():
    """One home each: savefig in mpl.py, the page shell and stylesheet in render.py, markdown table syntax there."""
    for path in sorted(REPORT.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if path.name != "mpl.py":
            assert "savefig" not in text and "matplotlib.use" not in text, path.name
        if path.name != "render.py":
            assert "<!DOCTYPE" not in text and "<style>" not in text and "|---" not in text, path.name
            assert not re.search(r"^def (markdown|html)\b", text, re.M), path.name


def test_slug_keeps_letters_digits_dash_and_underscore():
    assert slug("fashion_mnist-2 (a/b)") == "fashion_mnist-2__a_b_"
