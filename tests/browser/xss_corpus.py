"""A corpus of XSS payloads for the crawl in test_xss_corpus.py.

Each payload, if it ever ran, sets `window.__xss` to its number, calls `alert` (the test's
dialog handler records it), adds an element with an id starting "xss", or asks a host
other than 127.0.0.1 for something (the browser fixture records and blocks that). A test
that stores a payload checks all four after every page.

A payload goes out as an *instance*: the payload, then " //" and a short code naming the
field it went through, so the test can tell which field's text it sees (the suffix is a
JavaScript comment, so a `javascript:` URL or a breakout still runs if it can).
"""

LONG_FILLER = "long " * 400

PAYLOADS: dict[str, str] = {
    "script": "<script>window.__xss=1</script>",
    "img-onerror": '<img src=x onerror="window.__xss=2">',
    "svg-onload": "<svg onload=window.__xss=3>",
    "details-ontoggle": "<details open ontoggle=alert(4)>",
    "input-onfocus": "<input autofocus onfocus=window.__xss=5>",
    "template": "${window.__xss=6}",
    "backtick": "`+(window.__xss=7)+`",
    "escaped-backtick": "\\`${window.__xss=8}\\`",
    "script-breakout": "</script><script>window.__xss=9</script>",
    "javascript-url": "javascript:window.__xss=10",
    "double-quote": '" onmouseover="window.__xss=11" autofocus onfocus="window.__xss=11" x="',
    "single-quote": "' onmouseover='window.__xss=12' autofocus onfocus='window.__xss=12' x='",
    "js-string": "';window.__xss=13;//\";window.__xss=13;//",
    "unicode-escape": "\\u003cimg src=x onerror=window.__xss=14\\u003e",
    "full-width": "＜img src=x onerror=window.__xss=15＞",
    "hex-escape": "\\x3cimg src=x onerror=window.__xss=16\\x3e",
    "entities": "&lt;img src=x onerror=window.__xss=17&gt; &#60;b id=xss17&#62;",
    "textarea": "</textarea><img src=x onerror=window.__xss=18>",
    "comment": '<!--<img src="--><img src=x onerror=window.__xss=19>">',
    "title": "</title><svg onload=window.__xss=20>",
    "css-expression": '<div style="width:expression(window.__xss=21)" id=xss21>x</div>',
    "style-breakout": "</style><img src=x onerror=window.__xss=22>",
    "separators": "line\u2028separator\u2029<b id=xss23>bold</b>",
    "outside-request": '<img src="http://203.0.113.9/leak.png" id=xss24>',
    "anchor": '<a id=xss25 href="javascript:window.__xss=25">click</a>',
    "json-breakout": '"}]}</script><script>window.__xss=26</script>',
    "mutation": '<noscript><p title="</noscript><img src=x onerror=window.__xss=27>">',
    "iframe-srcdoc": '<iframe id=xss28 srcdoc="<script>parent.__xss=28</script>"></iframe>',
    "crlf": "name\r\nBcc: victim@example.com\r\n\r\n<b id=xss29>body</b>",
    "long": LONG_FILLER + "<img src=x onerror=window.__xss=30>",
}


def instance(name: str, code: str, max_length: int) -> str:
    """The payload `name` as sent through the field `code`, within `max_length` characters
    (only the long payload is cut: from its start, so its attack stays whole)."""
    suffix = f" //{code}"
    text = PAYLOADS[name] + suffix
    if len(text) > max_length:
        assert name == "long", f"{name} does not fit a field of {max_length}"
        text = text[-max_length:].lstrip()
    return text


def instances(code: str, max_length: int = 10_000) -> dict[str, str]:
    """Every payload as sent through the field `code`, by payload name."""
    return {name: instance(name, code, max_length) for name in PAYLOADS}


# What the test checks after every page: nothing ran, nothing was parsed into markup.
RAN_JS = """
() => ({
  xss: window.__xss === undefined ? null : window.__xss,
  parsed: Array.from(document.querySelectorAll('[id^="xss"]')).map((e) => e.id),
})
"""
