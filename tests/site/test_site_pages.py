"""The site's pages from a fake build folder: content, escaping, inputs, configuration, failures."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from afs_build import graph
from afs_build.errors import AfsError, ManifestError, StageError
from afs_build.manifest import load
from afs_build.paths import SiteFiles
from afs_build.resources import spec_file, templates_dir
from afs_build.site import build, inputs
from site_fixtures import HOSTILE, MANIFEST, built_site, write_build, write_manifest  # noqa: F401 (built)

# What the generated mkdocs.yml may use: checked against Zensical 0.0.73's config reader, which
# accepts each of these (font: false kept; offline and privacy plugins deliberately not used).
ZENSICAL_CHECKED = {"site_name", "site_url", "docs_dir", "site_dir", "use_directory_urls", "theme", "plugins",
                    "markdown_extensions", "extra_css", "extra_javascript", "nav"}
THEME_CHECKED = {"name", "font", "language", "features", "palette"}


def html(site: SiteFiles, page: str) -> str:
    return (site.html / page).read_text(encoding="utf-8")


def test_every_page_is_built(built):
    manifest, site = built
    for page in ("index", "dashboard", "costs", "lineage", "reference", "specialists/alpha",
                 "specialists/beta", "specialists/omega"):
        assert (site.html / f"{page}.html").is_file(), page
    assert set(p.name for p in (site.docs / "specialists").glob("*.md")) == {"alpha.md", "beta.md", "omega.md"}


def test_home_has_a_row_per_specialist_with_what_the_build_measured(built):
    _, site = built
    page = html(site, "index.html")
    for name in ("alpha", "beta", "omega"):
        assert f'data-specialist="{name}"' in page
        assert f'href="specialists/{name}.html"' in page
    row = page.split('data-specialist="alpha"')[1].split("</tr>")[0]
    assert "1,326" in row and "25 s" in row and "$0.00" in row  # tokens trained, time, cost
    assert "0.75 vs 0.25" in row and "better than its base" in row  # own category, with the verdict
    assert "[+0.40, +0.60]" in row  # the interval of the difference
    assert "Q4_K_M" in row and "Q8_0" in row and 'afs-chip">F16' not in row  # quantized files only
    assert "Q8_0 976.6 KiB · 50% same as F16" in row  # what the type costs in answers
    assert "6101" in row
    omega = page.split('data-specialist="omega"')[1].split("</tr>")[0]
    assert "served as it is" in omega


def test_a_reply_with_a_script_is_escaped_everywhere(built):
    _, site = built
    for path in site.html.rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        assert "<script>window.__afsPwned" not in text, path
        assert "onerror=\"window.__afsPwned" not in text, path
    page = html(site, "specialists/alpha.html")
    assert "&lt;script&gt;window.__afsPwned = 1&lt;/script&gt;" in page  # shown as text
    assert "&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in page  # a question holding </script>
    assert "Answers &lt;em&gt;briefly&lt;/em&gt; &amp; well." in page  # the manifest's description


def test_chart_data_is_escaped_json_in_an_attribute(built):
    import html as markup

    _, site = built
    page = html(site, "specialists/alpha.html")
    found = dict(re.findall(r'<canvas id="([^"]+)" data-afs-chart="([^"]*)"', page))
    assert {"chart-alpha-loss", "chart-alpha-categories"} <= set(found)
    for text in found.values():
        assert "<" not in text and ">" not in text
        config = json.loads(markup.unescape(text))
        assert config["type"] and config["data"]["datasets"]
    assert "<script type=\"application/json\"" not in page  # instant navigation would run it


def test_specialist_page_sections(built):
    _, site = built
    page = html(site, "specialists/alpha.html")
    for heading in ("Manifest", "Data", "Rejected records", "Training", "Artifacts", "Quantization",
                    "Benchmark", "Questions", "Screenshots", "How to use it", "LM Studio", "Ollama",
                    "The endpoint"):
        assert f">{heading}<" in page or f">{heading}</h" in page, heading
    assert "contaminated" in page and "duplicate" in page and "near-duplicate" in page  # rejects by reason
    assert "chat.jsonl:1" in page  # an example with its place
    assert "alpha-Q4_K_M.gguf" in page and "adapter_model.safetensors" in page
    assert "ollama create alpha -f build/specialists/alpha/deploy/Modelfile" in page
    assert "curl http://127.0.0.1:6101/v1/chat/completions" in page
    assert "OpenAI(base_url=&#34;http://127.0.0.1:6101/v1&#34;" in page or \
        "OpenAI(base_url=&quot;http://127.0.0.1:6101/v1&quot;" in page
    assert page.count("data-afs-row") == 5 and page.count('data-failed="true"') >= 1
    assert (site.html / "specialists/alpha/s1.diff.png").is_file()  # screenshots copied beside it
    assert 'src="alpha/s1.baseline.png"' in page


def test_a_field_the_evaluation_adds_later_is_shown(built):
    _, site = built
    page = html(site, "specialists/beta.html")
    assert "More measurements" in page and "latency.p95" in page and "0.48" in page


def test_costs_in_the_seed_form_with_the_session_total(built):
    _, site = built
    page = html(site, "costs.html")
    assert "Alpha v1: $0.050/hr ×" in page
    assert "Total: $" in page and "per training session (all 2 models)" in page
    assert "last run: 25s = $0.00" in page


def test_lineage_names_every_step_for_every_served_file(built):
    manifest, site = built
    page = html(site, "lineage.html")
    for name in manifest.specialists:
        assert f'id="lineage-{name}"' in page
    alpha = page.split('id="lineage-alpha"')[1].split("</ol>")[0]
    for step in ("manifest slice", "data (train)", "base model", "adapter", "GGUF", "quantized file", "served"):
        assert step in alpha
    assert "6e0558fdd2e7" in alpha  # the slice digest the adapter was trained from
    assert "differs" in alpha  # ... which is not what the manifest says now: a retrain is due


def test_reference_has_every_manifest_key_with_its_default(built):
    _, site = built
    page = html(site, "reference.html")
    schema = json.loads(spec_file("manifest.schema.json").read_text())
    for section, body in schema["properties"].items():
        assert f'id="manifest-{section}"' in page
        for key in body.get("properties", {}):
            assert f"<code>{section}.{key}</code>" in page, f"{section}.{key}"
    for name in schema["$defs"]:
        assert f'id="def-{name}"' in page
    assert "<code>eval.seed</code>" in page and "<code>0</code>" in page
    assert "<code>site.instant_navigation</code>" in page


def test_generated_mkdocs_config_keeps_to_what_zensical_reads(built):
    _, site = built
    config = yaml.safe_load(site.config.read_text())
    assert set(config) <= ZENSICAL_CHECKED
    assert set(config["theme"]) <= THEME_CHECKED and config["theme"]["font"] is False
    assert config["use_directory_urls"] is False and config["plugins"] == ["search"]
    assert "navigation.instant" in config["theme"]["features"]
    assert [list(p)[0] for p in config["nav"]][:4] == ["Home", "Comparison", "Costs", "Lineage"]


def test_the_built_site_names_nothing_outside_itself(built):
    _, site = built
    for path in site.html.rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        # what a page loads by itself: scripts, images, frames (src) and <link> elements; a plain
        # <a href> to elsewhere (the theme's footer credit) loads nothing until clicked
        loads = re.findall(r'src="((?:https?:)?//[^"]+)"', text) + \
            [h for h in re.findall(r'<link(?![^>]*rel="(?:canonical|alternate)")[^>]*href="([^"]+)"', text)
             if "//" in h]
        assert not loads, f"{path.name} loads {loads}"
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text
    assert (site.html / "assets/vendor/chart.umd.min.js").is_file()
    assert (site.html / "assets/vendor/chart.js-LICENSE.txt").is_file()


def test_every_site_input_is_made_by_a_task_of_the_graph(built):
    manifest, _ = built
    made = {t for task in graph.all_tasks(manifest) for t in task["targets"]}
    outside = {str(spec_file(n)) for n in inputs.SCHEMAS} | {str(manifest.resolve(manifest.eval.suite))}
    for task in graph.all_tasks(manifest):
        if task["name"].startswith("site:"):
            code = set(inputs.code()) | {str(inputs.lock_file())}
            for dep in task["file_dep"]:
                assert dep in made or dep in outside or dep in code, (task["name"], dep)


def test_the_template_list_matches_the_folder():
    assert sorted(inputs.TEMPLATES) == sorted(p.name for p in (templates_dir() / "site").iterdir())


def test_an_empty_build_folder_gives_pages_that_say_what_to_run(tmp_path):
    manifest = load(write_manifest(tmp_path))
    build.build_site(manifest)
    site = SiteFiles.of(manifest)
    page = html(site, "specialists/alpha.html")
    assert "Not built yet" in page and "doit mix:alpha" in page and "doit train:alpha" in page
    assert "doit eval:alpha" in page
    assert "not compared with its base yet" in page and "doit compare:alpha" in page
    beta = html(site, "specialists/beta.html")
    assert "Not evaluated with and without retrieval yet" in beta
    assert "doit index:docs" in beta and "doit eval:index:docs" in beta
    assert "not deployed" in html(site, "index.html")


def test_a_site_folder_that_would_hold_the_build_folder_is_refused(tmp_path):
    data = json.loads(json.dumps(MANIFEST))
    data["site"]["dir"] = "."
    manifest = load(write_manifest(tmp_path, data))
    with pytest.raises(StageError, match="site.dir '.' puts the built HTML in .* which overlaps the build folder"):
        build.build_site(manifest)
    assert not (tmp_path / "build" / "index.html").exists()


def test_a_title_with_markup_and_a_specialist_named_family_are_manifest_errors(tmp_path):
    data = json.loads(json.dumps(MANIFEST))
    data["site"]["title"] = "My <b>family</b>"
    data["specialists"]["family"] = data["specialists"].pop("beta")
    with pytest.raises(ManifestError) as err:
        load(write_manifest(tmp_path, data))
    text = str(err.value)
    assert "site.title" in text
    assert "specialists.family: the name 'family' is reserved" in text


def test_missing_chart_library_says_how_to_install_it(tmp_path, monkeypatch):
    manifest = load(write_build(tmp_path))
    monkeypatch.setenv("AFS_SITE_NODE_MODULES", str(tmp_path / "nowhere"))
    with pytest.raises(AfsError, match="npm ci --prefix .*afs_build/site/js"):
        build.build_site(manifest)


def test_a_failed_mkdocs_build_keeps_the_last_good_site(built, monkeypatch):
    manifest, site = built
    before = html(site, "index.html")
    broken = site.docs / "index.md"
    saved = broken.read_text()
    broken.write_text(saved + "\n[a link to nowhere](nowhere.md)\n")
    try:
        with pytest.raises(StageError, match="MkDocs could not build the site"):
            build.html(manifest)
        assert html(site, "index.html") == before
        assert not (site.folder / ".build.tmp").exists()
    finally:
        broken.write_text(saved)


def test_the_comparison_with_the_base_leads_the_dashboard(built):
    _, site = built
    page = html(site, "dashboard.html")
    assert page.index('id="afs-versus"') < page.index('id="chart-family-categories"')  # first
    alpha = page.split('<tr data-specialist="alpha">')[1].split("</tr>")[0]
    assert "better than its base" in alpha and "0.75 vs 0.25" in alpha and "[+0.40, +0.60]" in alpha
    assert "no measurable forgetting" in alpha and "does not retrieve" in alpha
    assert "Q8_0: 0.50 vs F16 0.50, 50% same replies" in alpha  # the served type's cost in answers
    beta = page.split('<tr data-specialist="beta">')[1].split("</tr>")[0]
    assert "not better than its base" in beta and "forgets general questions" in beta
    assert "0.25 vs 0.75" in beta and "[-0.60, -0.40]" in beta  # the general difference, below zero
    assert "0.75 vs 0.25" in beta  # with against without retrieval
    assert "1 of 2 compared specialists are better than their base" in page
    assert "forgetting general questions (the general interval lies below zero): beta" in page


def test_a_specialist_page_opens_with_its_verdict_against_the_base(built):
    _, site = built
    page = html(site, "specialists/beta.html")
    box = page.split('id="afs-versus-beta"')[1].split("</div>")[0]
    assert page.index('id="afs-versus-beta"') < page.index('id="manifest"')
    assert "not better than its base" in box and "forgets general questions" in box
    assert "Served Q8_0: score 0.50 against the F16's 0.50 (+0.00), 50% of 3 replies identical" in box
    assert "Retrieval: 0.75 with, 0.25 without (+0.50 [+0.40, +0.60])" in box
    assert 'id="afs-versus-omega"' not in html(site, "specialists/omega.html")  # served as it is


def test_retrieval_effect_and_index_quality_where_present(built):
    _, site = built
    page = html(site, "specialists/beta.html")
    effect = page.split('id="afs-retrieval-effect"')[1].split("</table>")[0]
    assert "own (asm)</td><td>2</td><td>0.75</td><td>0.25</td><td>+0.50</td><td>[+0.40, +0.60]" in effect
    assert "3 of them got context" in page
    facts = page.split('id="afs-index-docs"')[1].split("</table>")[0]
    assert "42 chunks from 3 files, 2 skipped" in facts and "384 dimensions" in facts
    assert "&lt;script&gt;window.__afsPwned" in facts  # a skip reason from the build, escaped
    quality = page.split('id="afs-index-quality-docs"')[1].split("</table>")[0]
    assert "<td>hybrid</td><td>0.50</td><td>1.00</td><td>1.00</td><td>0.80</td><td>2</td>" in quality
    assert "Retrieval" not in html(site, "specialists/alpha.html").split('id="questions"')[0].split('id="benchmark"')[1]
    dash = html(site, "dashboard.html")
    assert 'id="afs-retrieval-beta"' in dash and 'id="afs-index-quality-docs"' in dash
    notes = dash.split('id="index-notes"')[1]
    assert "Index notes is not built yet" in notes and "doit index:notes" in notes
    assert "Index notes has no questions" in notes  # nothing to measure, said plainly


def test_the_evaluation_reports_and_screenshots_are_published_where_present(built):
    _, site = built
    page = html(site, "specialists/alpha.html")
    assert '<a href="../reports/eval/alpha/report.html">' in page
    assert (site.html / "reports/eval/alpha/report.html").is_file()
    assert (site.html / "reports/eval/alpha/categories.png").is_file()
    assert not (site.html / "reports/eval/alpha/report.md").exists()  # it would become a page
    assert '<a href="reports/eval/alpha/report.json">' in html(site, "dashboard.html")
    assert "../reports/eval/alpha" not in html(site, "specialists/beta.html")
    beta = html(site, "specialists/beta.html")  # screenshots in one folder per kind
    shots = beta.split('id="afs-screenshots"')[1].split("</table>")[0]
    for kind in ("baseline", "actual", "diff"):
        assert f'src="beta/a1.{kind}.png"' in shots
        assert (site.html / f"specialists/beta/a1.{kind}.png").is_file()


def test_a_reply_that_was_never_graded_is_shown_and_left_out_of_the_means(built):
    _, site = built
    page = html(site, "specialists/beta.html")
    row = page.split('id="q-a2"')[1].split("</tr>")[0]
    assert "not graded" in row and "timed out after 3 attempts &lt;script&gt;" in row
    categories = page.split('id="afs-categories"')[1].split("</table>")[0]
    assert "<td>asm</td><td>2</td>" in categories  # both asked, one graded
