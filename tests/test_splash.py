"""Tests for the 451 splash response (blocklist_addon.ops.splash, DESIGN "Splash page").

What is checked: which requests get the branded page (wants_page), the exact headers, the
page's required elements (hotline wording, appeal, help, reference), escaping of every
reflected or configured value, that odd request text never breaks the response, that the
tiny body and HEAD reveal nothing, and that bad configuration fails with a clear message.
"""

from __future__ import annotations

import pathlib
import string
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from blocklist_addon.ops import splash
from blocklist_addon.ops.splash import (
    DEFAULT_ABOUT_URL,
    DEFAULT_APPEAL_URL,
    DEFAULT_HELP_URL,
    DEFAULT_HOTLINE,
    DEFAULT_OPERATOR,
    PLACEHOLDERS,
    SplashConfig,
    SplashError,
    SplashResponse,
    default_template,
    load_template,
    render,
    wants_page,
)

URL = "http://listed.example/dir/page.html?x=1&y=2"
NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)

CHROME_NAVIGATION = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Site": "none",
    "Sec-Fetch-User": "?1",
    "Upgrade-Insecure-Requests": "1",
}
FIREFOX_OLD_NAVIGATION = {  # no Sec-Fetch-* (older browsers, some embedded clients)
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
}


def page_of(config: SplashConfig | None = None, **kwargs: object) -> str:
    """The rendered HTML page as text."""
    args: dict[str, object] = {
        "url": URL,
        "list_name": "iwf",
        "reference": "ev-0123abcd",
        "page": True,
        "now": NOW,
    }
    args.update(kwargs)
    response = render(config or SplashConfig(), **args)  # type: ignore[arg-type]
    return response.body.decode("utf-8")


# --- wants_page ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        pytest.param("GET", CHROME_NAVIGATION, True, id="chrome-navigation"),
        pytest.param("GET", FIREFOX_OLD_NAVIGATION, True, id="accept-html-no-sec-fetch"),
        pytest.param("POST", {"Sec-Fetch-Dest": "document"}, True, id="form-post-document"),
        pytest.param("HEAD", {"Sec-Fetch-Dest": "document"}, True, id="head-document"),
        pytest.param("GET", {"Sec-Fetch-Dest": "iframe"}, True, id="iframe"),
        pytest.param("GET", {"Sec-Fetch-Dest": "frame"}, True, id="frame"),
        pytest.param("GET", {"Sec-Fetch-Dest": "embed"}, True, id="embed"),
        pytest.param("GET", {"Sec-Fetch-Dest": "object"}, True, id="object"),
        pytest.param(
            "GET",
            {
                "Sec-Fetch-Dest": "image",
                "Accept": "image/avif,image/webp,*/*",
                "Sec-Fetch-Mode": "no-cors",
            },
            False,
            id="img",
        ),
        pytest.param("GET", {"Sec-Fetch-Dest": "script", "Accept": "*/*"}, False, id="script"),
        pytest.param(
            "GET",
            {"Sec-Fetch-Dest": "empty", "Sec-Fetch-Mode": "cors", "Accept": "text/html"},
            False,
            id="fetch-asking-for-html",
        ),
        pytest.param(
            "GET",
            {"Sec-Fetch-Dest": "style", "Sec-Fetch-Mode": "navigate"},
            False,
            id="dest-decides-before-mode",
        ),
        pytest.param("GET", {"Sec-Fetch-Mode": "navigate"}, True, id="mode-navigate-only"),
        pytest.param("GET", {"Sec-Fetch-Mode": "cors", "Accept": "*/*"}, False, id="mode-cors"),
        pytest.param(
            "GET",
            {"X-Requested-With": "XMLHttpRequest", "Accept": "text/html, */*; q=0.01"},
            False,
            id="jquery-xhr",
        ),
        pytest.param("GET", {"Accept": "*/*", "User-Agent": "curl/8.5.0"}, False, id="curl"),
        pytest.param("GET", {}, False, id="no-headers"),
        pytest.param("GET", {"Accept": "text/html"}, True, id="accept-text-html"),
        pytest.param("GET", {"Accept": "TEXT/HTML; charset=utf-8"}, True, id="accept-params"),
        pytest.param("GET", {"Accept": "application/xhtml+xml"}, False, id="xhtml-only"),
        pytest.param("GET", {"Accept": "text/htmlx"}, False, id="accept-not-a-substring"),
        pytest.param("GET", {"Accept": "x-text/html"}, False, id="accept-other-type"),
        pytest.param("GET", {"Accept": "text/html;q=0, */*"}, False, id="accept-html-q0"),
        pytest.param("GET", {"accept": "text/html"}, True, id="lowercase-name"),
        pytest.param("GET", {"ACCEPT": "text/html"}, True, id="uppercase-name"),
        pytest.param("GET", {"sec-fetch-dest": "Document"}, True, id="dest-value-case"),
        pytest.param(
            "GET", {"SEC-FETCH-DEST": "IMAGE", "Accept": "text/html"}, False, id="dest-upper"
        ),
        pytest.param("GET", {"sec-fetch-mode": "NAVIGATE"}, True, id="mode-value-case"),
        pytest.param(
            "GET",
            {"x-requested-with": "XMLHttpRequest", "Accept": "text/html"},
            False,
            id="xrw-lower",
        ),
        pytest.param("get", {"Accept": "text/html"}, True, id="method-case"),
        pytest.param("PUT", {"Accept": "text/html"}, False, id="put-is-never-navigation"),
        pytest.param("OPTIONS", {"Sec-Fetch-Dest": "document"}, False, id="options"),
    ],
)
def test_wants_page(method: str, headers: dict[str, str], expected: bool) -> None:
    assert wants_page(method, headers) is expected


def test_wants_page_joins_headers_differing_only_in_case() -> None:
    assert wants_page("GET", {"Accept": "image/png", "accept": "text/html"}) is True


def test_wants_page_with_mitmproxy_headers() -> None:
    """The caller passes mitmproxy's case-insensitive Headers, not a dict."""
    headers_module = pytest.importorskip("mitmproxy.http")
    headers = headers_module.Headers([(b"sec-fetch-dest", b"image"), (b"accept", b"text/html")])
    assert wants_page("GET", headers) is False
    assert wants_page("GET", headers_module.Headers(accept="text/html")) is True


# --- headers and status ----------------------------------------------------------------------


def test_page_headers_exact() -> None:
    response = render(SplashConfig(), url=URL, list_name="iwf", reference="r1", page=True, now=NOW)
    assert isinstance(response, SplashResponse)
    assert response.status == 451
    assert response.headers == [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Cache-Control", "no-store"),
        ("Link", f'<{DEFAULT_ABOUT_URL}>; rel="blocked-by"'),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Content-Security-Policy", CSP),
    ]


def test_tiny_headers_exact() -> None:
    config = SplashConfig(about_url="https://isp.example.net/blocking")
    response = render(config, url=URL, list_name="iwf", reference="r1", page=False)
    assert response.status == 451
    assert response.headers == [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Cache-Control", "no-store"),
        ("Link", '<https://isp.example.net/blocking>; rel="blocked-by"'),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
    ]


@pytest.mark.parametrize("page", [True, False])
@pytest.mark.parametrize("method", ["HEAD", "head"])
def test_head_has_empty_body_and_same_headers(page: bool, method: str) -> None:
    get = render(SplashConfig(), url=URL, list_name="iwf", reference="r1", page=page)
    head = render(
        SplashConfig(), url=URL, list_name="iwf", reference="r1", page=page, method=method
    )
    assert get.body
    assert head.body == b""
    assert head.status == 451
    assert head.headers == get.headers


# --- the page --------------------------------------------------------------------------------


def test_default_page_has_the_required_elements() -> None:
    page = page_of()
    assert page.startswith("<!DOCTYPE html>")
    assert '<html lang="en">' in page
    assert '<meta name="viewport"' in page
    assert '<meta name="robots" content="noindex' in page
    assert "<title>Access denied</title>" in page
    assert f"denied by {DEFAULT_OPERATOR}" in page
    assert "indecent images of children" in page
    assert f"as identified by {splash.html.escape(DEFAULT_HOTLINE)}" in page
    assert "http://listed.example/dir/page.html?x=1&amp;y=2" in page
    assert "<dd>iwf</dd>" in page
    assert "ev-0123abcd" in page
    assert "2024-05-06T07:08:09Z" in page
    assert f'<a href="{DEFAULT_APPEAL_URL}">' in page
    assert "content\n  assessment appeal" in page or "content assessment appeal" in page
    assert f'<a href="{DEFAULT_HELP_URL}">' in page
    assert "Confidential help" in page
    assert "$" not in page  # every placeholder was substituted


def test_default_page_is_self_contained() -> None:
    page = page_of().lower()
    assert "<script" not in page
    assert "<link" not in page
    assert "src=" not in page
    assert "@import" not in page
    assert "url(" not in page


def test_page_with_configured_values() -> None:
    config = SplashConfig(
        about_url="https://isp.example.net/about-blocking",
        operator="Example Net Ltd",
        contact="abuse@example.net",
        hotline="the Example Hotline",
        appeal_url="https://hotline.example.org/appeal",
        help_url="https://help.example.org/",
    )
    page = page_of(config)
    assert "denied by Example Net Ltd" in page
    assert "identified by the Example Hotline" in page
    assert '<a href="https://hotline.example.org/appeal">' in page
    assert '<a href="https://help.example.org/">' in page
    assert '<a href="mailto:abuse@example.net">abuse@example.net</a>' in page
    assert "Please tell Example Net Ltd at" in page
    assert '<a href="https://isp.example.net/about-blocking">' in page
    assert DEFAULT_HOTLINE not in page


@pytest.mark.parametrize(
    ("contact", "link"),
    [
        ("abuse@example.net", '<a href="mailto:abuse@example.net">abuse@example.net</a>'),
        (
            "mailto:abuse@example.net?subject=Blocked",
            '<a href="mailto:abuse@example.net?subject=Blocked">abuse@example.net</a>',
        ),
        (
            "https://isp.example.net/report?a=1&b=2",
            '<a href="https://isp.example.net/report?a=1&amp;b=2">'
            "https://isp.example.net/report?a=1&amp;b=2</a>",
        ),
    ],
)
def test_contact_forms(contact: str, link: str) -> None:
    page = page_of(SplashConfig(contact=contact), reference="ref-9")
    assert link in page
    assert "quoting the reference ref-9." in page


def test_no_contact_no_contact_sentence() -> None:
    page = page_of(SplashConfig(contact=""))
    assert "Please tell" not in page
    assert "mailto:" not in page


def test_long_url_is_truncated_with_ellipsis() -> None:
    long_url = "http://listed.example/" + "a" * 1000
    page = page_of(url=long_url)
    shown = "http://listed.example/" + "a" * (splash.URL_DISPLAY_MAX - 1 - 22) + "\u2026"
    assert len(shown) == splash.URL_DISPLAY_MAX
    assert f'<dd class="url">{shown}</dd>' in page
    assert "a" * 1000 not in page


def test_exact_length_url_is_not_truncated() -> None:
    url = "http://listed.example/" + "b" * (splash.URL_DISPLAY_MAX - 22)
    assert len(url) == splash.URL_DISPLAY_MAX
    page = page_of(url=url)
    assert f'<dd class="url">{url}</dd>' in page


@pytest.mark.parametrize(
    ("now", "shown"),
    [
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05Z"),
        (
            datetime(2024, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            "2024-01-02T03:04:05Z",
        ),
        (datetime(2024, 1, 2, 3, 4, 5, 999999), "2024-01-02T03:04:05Z"),  # naive = UTC
    ],
)
def test_time_is_utc_to_the_second(now: datetime, shown: str) -> None:
    assert f'<time datetime="{shown}">{shown}</time>' in page_of(now=now)


def test_time_defaults_to_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    page = page_of(now=None)
    after = datetime.now(UTC)
    stamps = {
        (before + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for s in range(int((after - before).total_seconds()) + 1)
    }
    assert any(stamp in page for stamp in stamps)


# --- escaping --------------------------------------------------------------------------------

MARKUP = [
    "<script>alert(1)</script>",
    '"onmouseover="alert(1)',
    "'onfocus='alert(1)",
    "</title><script>x</script>",
    "<img src=x onerror=alert(1)>",
]


@pytest.mark.parametrize("markup", MARKUP)
def test_markup_in_url_is_escaped(markup: str) -> None:
    page = page_of(url=f"http://listed.example/{markup}")
    assert markup not in page
    assert splash.html.escape(markup, quote=True) in page
    assert "<script" not in page.lower()


@pytest.mark.parametrize("markup", MARKUP)
def test_markup_in_list_name_is_escaped(markup: str) -> None:
    page = page_of(list_name=markup)
    assert markup not in page
    assert f"<dd>{splash.html.escape(markup, quote=True)}</dd>" in page


@pytest.mark.parametrize("markup", MARKUP)
def test_markup_in_text_settings_is_escaped(markup: str) -> None:
    config = SplashConfig(operator=f"Op {markup}", hotline=f"Hot {markup}", contact="a@example.net")
    page = page_of(config)
    assert markup not in page
    escaped = splash.html.escape(markup, quote=True)
    assert f"denied by Op {escaped}" in page
    assert f"identified by Hot {escaped}" in page
    assert f"Please tell Op {escaped} at" in page  # contact_html escapes its parts too
    assert "<script" not in page.lower()


def test_quotes_and_ampersands_in_urls_are_escaped_in_attributes() -> None:
    config = SplashConfig(help_url="https://help.example.org/?a=1&b=2")
    assert '<a href="https://help.example.org/?a=1&amp;b=2">' in page_of(config)


def test_reference_is_sanitized_everywhere() -> None:
    reference = 'ab<script>"\r\n\x00\u00e9-12'
    page = page_of(reference=reference, config=SplashConfig(contact="a@example.net"))
    assert "<code>abscript-12</code>" in page
    tiny = render(SplashConfig(), url=URL, list_name="iwf", reference=reference, page=False)
    assert tiny.body == b"Blocked (451 Unavailable For Legal Reasons). Reference: abscript-12\n"


def test_reference_is_bounded() -> None:
    tiny = render(SplashConfig(), url=URL, list_name="l", reference="z" * 500, page=False)
    assert tiny.body.count(b"z") == splash.REFERENCE_MAX


def test_lone_surrogates_and_controls_in_url_are_replaced() -> None:
    page = page_of(url="http://listed.example/\udcff\ud800x\x00\x1b\u202e")
    assert '<dd class="url">http://listed.example/\ufffd\ufffdx\ufffd\ufffd\ufffd</dd>' in page


# --- the tiny body ---------------------------------------------------------------------------


def test_tiny_body_is_exact_and_reveals_nothing() -> None:
    url = "http://listed.example/secret-path/page.html"
    response = render(
        SplashConfig(), url=url, list_name="confidential-list", reference="ev-1", page=False
    )
    assert response.body == b"Blocked (451 Unavailable For Legal Reasons). Reference: ev-1\n"
    assert b"listed.example" not in response.body
    assert b"secret-path" not in response.body
    assert b"confidential-list" not in response.body
    assert all(url not in value for _, value in response.headers)


def test_page_never_shows_entry_details() -> None:
    """render has no parameter for the entry id or digest; a Match's fields cannot leak."""
    import inspect

    assert set(inspect.signature(render).parameters) == {
        "config",
        "url",
        "list_name",
        "reference",
        "page",
        "method",
        "now",
    }


# --- hypothesis: never raises, never breaks out ----------------------------------------------

any_text = st.text(
    st.one_of(
        st.characters(codec=None),
        st.characters(codec=None, categories=["Cs", "Cc", "Cf"]),
        st.sampled_from(list("<>\"'&$\r\n\x00")),
    ),
    max_size=400,
) | st.sampled_from(MARKUP)


@given(url=any_text, list_name=any_text, reference=any_text, page=st.booleans())
@example(url="<script>", list_name="</title><script>", reference="\r\n", page=True)
@example(url="\udcff" * 301, list_name="\x00", reference="", page=True)
def test_render_never_raises_and_never_breaks_out(
    url: str, list_name: str, reference: str, page: bool
) -> None:
    response = render(
        SplashConfig(contact="abuse@example.net"),
        url=url,
        list_name=list_name,
        reference=reference,
        page=page,
        now=NOW,
    )
    text = response.body.decode("utf-8")
    assert "<script" not in text.lower()
    assert response.status == 451
    for name, value in response.headers:
        for char in "\r\n\x00":
            assert char not in name
            assert char not in value
    if not page:
        assert response.body.isascii()
        assert text.count("\n") == 1
    if page:  # reflected values add no markup: same tags and quotes as a plain request
        plain = page_of(SplashConfig(contact="abuse@example.net"), url="u", list_name="l")
        for char in "<>\"'":
            assert text.count(char) == plain.count(char)


# --- configuration ---------------------------------------------------------------------------


def test_defaults() -> None:
    config = SplashConfig()
    assert config.about_url == DEFAULT_ABOUT_URL == "https://www.iwf.org.uk/"
    assert config.appeal_url == DEFAULT_APPEAL_URL
    assert config.help_url == DEFAULT_HELP_URL == "https://www.stopitnow.org.uk/"
    assert config.hotline == DEFAULT_HOTLINE
    assert config.operator == DEFAULT_OPERATOR
    assert config.contact == ""
    assert config.template is None


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        (
            "about_url",
            "javascript:alert(1)",
            "about_url: 'javascript:alert(1)' must be an absolute",
        ),
        ("appeal_url", "JavaScript:alert(1)", "appeal_url:"),
        ("help_url", "data:text/html,x", "help_url:"),
        ("help_url", "//help.example.org/", "must be an absolute http"),
        ("help_url", "/relative", "must be an absolute http"),
        ("about_url", "https://isp.example.net/a b", "whitespace or a control character"),
        ("about_url", "https://isp.example.net/\r\nX-Evil: 1", "whitespace or a control character"),
        ("about_url", "https://isp.example.net/a>b", "contains '>'"),
        ("about_url", "https://isp.example.net/a<b", "contains '<'"),
        ("appeal_url", 'https://isp.example.net/"x', "contains '\"'"),
        ("appeal_url", "https://isp.example.net/'x", 'contains "\'"'),
        ("help_url", "https://isp.example.net/\\x", "contains '\\\\'"),
        ("help_url", "https://isp.example.net/\u00e9", "non-ASCII"),
        ("help_url", "https:///path", "has no host"),
        ("help_url", "https://isp.example.net:port/", "not a valid URL"),
        ("about_url", "", "must be an absolute http"),
        ("contact", "javascript:alert(1)", "contact: 'javascript:alert(1)' is not an e-mail"),
        ("contact", "not an address", "contact:"),
        ("contact", "mailto:nobody", "contact: 'mailto:nobody' is not a mailto: URL"),
        ("contact", "mailto:a@example.net>", "contains '>'"),
        ("contact", "https://isp.example.net/ x", "contact:"),
        ("contact", "a@example.net\r\n", "contact:"),
        ("operator", "", "operator: must not be empty"),
        ("operator", "Op\nX", "operator:"),
        ("hotline", "   ", "hotline: must not be empty"),
    ],
)
def test_bad_settings_raise(setting: str, value: str, message: str) -> None:
    with pytest.raises(SplashError) as info:
        SplashConfig(**{setting: value})  # type: ignore[arg-type]
    assert message in str(info.value)
    assert str(info.value).startswith(f"{setting}:")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://isp.example.net",
        "HTTPS://isp.example.net/blocking?why=1#top",
        "https://192.0.2.1:8443/about",
        "https://[2001:db8::1]/about",
        "https://isp.example.net/caf%C3%A9",
    ],
)
def test_good_urls_accepted(url: str) -> None:
    config = SplashConfig(about_url=url, appeal_url=url, help_url=url, contact=url)
    assert render(config, url=URL, list_name="l", reference="r", page=False).headers[2] == (
        "Link",
        f'<{url}>; rel="blocked-by"',
    )


def test_splash_error_is_a_value_error() -> None:
    assert issubclass(SplashError, ValueError)


# --- templates -------------------------------------------------------------------------------


def test_default_template_is_valid_and_uses_the_placeholders() -> None:
    template = string.Template(default_template())
    assert template.is_valid()
    used = set(template.get_identifiers())
    assert used == PLACEHOLDERS - {"contact"}  # contact appears through contact_html
    assert default_template() is default_template()  # read once


def test_placeholders() -> None:
    assert {
        "url",
        "list",
        "reference",
        "time",
        "operator",
        "contact",
        "contact_html",
        "hotline",
        "appeal_url",
        "help_url",
        "about_url",
    } == PLACEHOLDERS


def test_custom_template_with_every_placeholder_and_dollars() -> None:
    text = "Price: $$5 " + " ".join(f"[{name}=${{{name}}}]" for name in sorted(PLACEHOLDERS))
    config = SplashConfig(
        template=text,
        contact="https://isp.example.net/report",
        operator="Op & Co",
        about_url="https://isp.example.net/about",
    )
    page = page_of(config, url="http://listed.example/<x>", list_name="l'1", reference="ref-1")
    assert page.startswith("Price: $5 ")
    assert "[url=http://listed.example/&lt;x&gt;]" in page
    assert "[list=l&#x27;1]" in page
    assert "[reference=ref-1]" in page
    assert "[time=2024-05-06T07:08:09Z]" in page
    assert "[operator=Op &amp; Co]" in page
    assert "[contact=https://isp.example.net/report]" in page
    assert (
        '[contact_html=Please tell Op &amp; Co at <a href="https://isp.example.net/report">' in page
    )
    assert f"[hotline={splash.html.escape(DEFAULT_HOTLINE)}]" in page
    assert f"[appeal_url={DEFAULT_APPEAL_URL}]" in page
    assert f"[help_url={DEFAULT_HELP_URL}]" in page
    assert "[about_url=https://isp.example.net/about]" in page


def test_custom_template_without_contact_gets_empty_contact_html() -> None:
    page = page_of(SplashConfig(template="<p>[$contact_html][$contact]</p>"))
    assert page == "<p>[][]</p>"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("<p>$foo</p>", "template: unknown placeholder $foo (known: $about_url,"),
        ("<p>${bar} $url $baz</p>", "template: unknown placeholder $bar, $baz"),
        ("<p>costs $5</p>", "template: invalid placeholder at line 1, column 10"),
        ("<p>\nok $url\nend $</p>", "template: invalid placeholder at line 3, column 5"),
        ("", "template: is empty"),
        ("  \n", "template: is empty"),
    ],
)
def test_bad_template_text(template: str, message: str) -> None:
    with pytest.raises(SplashError) as info:
        SplashConfig(template=template)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_load_template(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "splash.html"
    path.write_text("\ufeff<p>Blocked: $url \u2014 $$1</p>", encoding="utf-8")
    text = load_template(str(path))
    assert text == "<p>Blocked: $url \u2014 $$1</p>"  # BOM dropped
    assert page_of(SplashConfig(template=text), url="u") == "<p>Blocked: u \u2014 $1</p>"


def test_load_template_missing(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nope.html"
    with pytest.raises(SplashError, match=r"template .*nope\.html: cannot read: No such file"):
        load_template(str(path))


def test_load_template_directory(tmp_path: pathlib.Path) -> None:
    with pytest.raises(SplashError, match="cannot read"):
        load_template(str(tmp_path))


def test_load_template_not_utf8(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "latin1.html"
    path.write_bytes("<p>caf\u00e9 $url</p>".encode("latin-1"))
    with pytest.raises(SplashError, match=r"latin1\.html: not UTF-8 \(byte offset 6\)"):
        load_template(str(path))


def test_load_template_unknown_placeholder(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bad.html"
    path.write_text("<p>$url $foo</p>", encoding="utf-8")
    with pytest.raises(SplashError, match=r"bad\.html: unknown placeholder \$foo"):
        load_template(str(path))


def test_header_values_stay_clean_even_if_validation_is_bypassed() -> None:
    config = SplashConfig()
    object.__setattr__(config, "about_url", "https://isp.example.net/\r\nSet-Cookie: x=1\x00")
    response = render(config, url=URL, list_name="l", reference="r", page=True)
    assert ("Link", '<https://isp.example.net/Set-Cookie: x=1>; rel="blocked-by"') in (
        response.headers
    )


def test_a_test_list_gets_neutral_wording_not_the_hotlines() -> None:
    """The self-test entry must not tell whoever checks the proxy that the page 'may contain
    indecent images of children' (issue 26, item 2): a list named in test_lists answers
    the same 451 with the same headers and a page that says it is a test."""
    config = splash.SplashConfig(operator="Example School IT")
    listed = splash.render(
        config, url="http://x.example/", list_name="iwf", reference="r1", page=True
    )
    test = splash.render(
        config, url="http://blocklist-check.invalid/", list_name="selftest", reference="r2",
        page=True,
    )  # fmt: skip
    assert listed.status == test.status == 451
    assert dict(listed.headers).keys() == dict(test.headers).keys()
    assert b"indecent images of children" in listed.body
    assert b"indecent images of children" not in test.body
    assert b"Internet Watch Foundation" not in test.body
    assert b"self-test" in test.body and b"Example School IT" in test.body
    plain = splash.render(
        config, url="http://blocklist-check.invalid/", list_name="selftest", reference="r3",
        page=False,
    )  # fmt: skip
    assert plain.status == 451 and b"self-test" in plain.body
    quiet = splash.SplashConfig(test_lists=frozenset())
    shown = splash.render(quiet, url="u", list_name="selftest", reference="r4", page=True)
    assert b"indecent images of children" in shown.body  # not a test list: the real wording


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize("image", [False, True])
def test_a_refused_test_upload_speaks_as_a_test(as_json: bool, image: bool) -> None:
    """The self-test image and link refused at upload (the hosting chapter's check) say it
    is a test, as the self-test page does, not that the file matches the hotline's list of
    abuse images; a list not named in test_lists keeps the real wording."""
    config = splash.SplashConfig(operator="Example Uploads")
    test = splash.refused_upload(
        config, list_name="selftest", reference="r5", as_json=as_json, image=image, site=True
    )
    real = splash.refused_upload(
        config, list_name="iwf", reference="r6", as_json=as_json, image=image, site=True
    )
    assert test.status == real.status == 451
    assert dict(test.headers).keys() == dict(real.headers).keys()
    for hotline in (b"child sexual abuse", b"indecent images of children"):
        assert hotline not in test.body
    assert (b"child sexual abuse" if image else b"indecent images of children") in real.body
    assert b"self-test" in test.body and b"Example Uploads" in test.body
    assert b"r5" in test.body
