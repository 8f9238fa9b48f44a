//! Whether an uploaded SVG is safe to serve from the tenant's media library. An SVG is a
//! document that browsers run script in, so the media library refuses (marks rejected and
//! removes) any that could: script elements, event handler attributes, `javascript:` links
//! (character references decoded first: `&#106;avascript:` is the same link), embedded HTML,
//! DTDs and entities (entity expansion bombs), processing instructions, outside resources, and
//! style sheets that import or script. Plain drawings pass unchanged.
use xmlparser::{ElementEnd, Token, Tokenizer};

/// Elements that run or embed other documents.
const DENIED_ELEMENTS: [&str; 8] = [
    "script",
    "foreignobject",
    "iframe",
    "embed",
    "object",
    "handler",
    "listener",
    "base",
];
/// Raster images an SVG may carry inline.
const DATA_IMAGES: [&str; 4] = ["data:image/png", "data:image/jpeg", "data:image/gif", "data:image/webp"];

/// XML's predefined entities and character references decoded (anything else left as is).
fn decode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(rest.get(..amp).unwrap_or_default());
        let tail = rest.get(amp..).unwrap_or_default();
        let Some(semi) = tail.find(';').filter(|&s| s <= 12) else {
            out.push('&');
            rest = tail.get(1..).unwrap_or_default();
            continue;
        };
        let name = tail.get(1..semi).unwrap_or_default();
        let decoded = match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => name
                .strip_prefix("#x")
                .or_else(|| name.strip_prefix("#X"))
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| name.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = tail.get(semi + 1..).unwrap_or_default();
            }
            None => {
                out.push('&');
                rest = tail.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

/// A value as a browser reads a URL in it: decoded, without whitespace or control characters,
/// lower case.
fn squeezed(raw: &str) -> String {
    decode(raw)
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .flat_map(char::to_lowercase)
        .collect()
}

fn scripted(value: &str) -> bool {
    let v = squeezed(value);
    v.contains("javascript:")
        || v.contains("vbscript:")
        || (v.contains("data:") && !DATA_IMAGES.iter().any(|d| v.starts_with(d)))
}

fn outside(value: &str) -> bool {
    let v = squeezed(value);
    v.starts_with("http:") || v.starts_with("https:") || v.starts_with("//") || v.starts_with("ftp:")
}

fn bad_css(css: &str) -> Option<&'static str> {
    let v = squeezed(css);
    if v.contains("javascript:") || v.contains("expression(") || v.contains("behavior:") {
        Some("a style that runs script")
    } else if v.contains("@import")
        || v.contains("url(http")
        || v.contains("url(//")
        || v.contains("url('http")
        || v.contains("url(\"http")
    {
        Some("a style that loads outside resources")
    } else {
        None
    }
}

/// `Ok` for an SVG safe to serve; otherwise why not, in words for the library's list.
pub fn check(bytes: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the SVG is not UTF-8 text".to_owned())?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Open elements: the name as written (`prefix:local`) and the local name in lower case.
    let mut stack: Vec<(String, String)> = Vec::new();
    let malformed = |why: &str| format!("the SVG is not well-formed XML ({why})");
    let mut root: Option<String> = None;
    for token in Tokenizer::from(text) {
        let token = token.map_err(|e| format!("the SVG is not well-formed XML ({e})"))?;
        match token {
            Token::Declaration { .. } | Token::Comment { .. } => {}
            Token::ProcessingInstruction { target, .. } => {
                return Err(format!("the SVG holds a processing instruction ({})", target.as_str()));
            }
            Token::DtdStart { .. }
            | Token::EmptyDtd { .. }
            | Token::EntityDeclaration { .. }
            | Token::DtdEnd { .. } => {
                return Err("the SVG declares a DTD or entities".to_owned());
            }
            Token::ElementStart { prefix, local, .. } => {
                if root.is_some() && stack.is_empty() {
                    return Err(malformed("a second root element"));
                }
                let name = local.as_str().to_ascii_lowercase();
                if DENIED_ELEMENTS.contains(&name.as_str()) {
                    return Err(format!("the SVG holds a <{}> element", local.as_str()));
                }
                if root.is_none() {
                    if name != "svg" {
                        return Err(format!("the document is <{}>, not an SVG", local.as_str()));
                    }
                    root = Some(name.clone());
                }
                stack.push((format!("{}:{}", prefix.as_str(), local.as_str()), name));
            }
            Token::Attribute { local, value, .. } => {
                let name = local.as_str().to_ascii_lowercase();
                if name.starts_with("on") {
                    return Err(format!("the SVG has an event handler ({})", local.as_str()));
                }
                if scripted(value.as_str()) {
                    return Err(format!("the SVG has a script link in {}", local.as_str()));
                }
                if (name == "href" || name == "src") && outside(value.as_str()) {
                    return Err(format!("the SVG loads an outside resource ({})", local.as_str()));
                }
                if name == "style"
                    && let Some(why) = bad_css(value.as_str())
                {
                    return Err(format!("the SVG has {why}"));
                }
            }
            Token::ElementEnd { end, .. } => match end {
                ElementEnd::Open => {}
                ElementEnd::Empty => {
                    stack.pop();
                }
                ElementEnd::Close(prefix, local) => {
                    let closing = format!("{}:{}", prefix.as_str(), local.as_str());
                    match stack.pop() {
                        Some((open, _)) if open == closing => {}
                        _ => return Err(malformed(&format!("</{}> closes nothing open", local.as_str()))),
                    }
                }
            },
            Token::Text { text } | Token::Cdata { text, .. } => {
                if stack.is_empty() && !text.as_str().trim().is_empty() {
                    return Err(malformed("text outside the root element"));
                }
                if stack.last().is_some_and(|(_, e)| e == "style")
                    && let Some(why) = bad_css(text.as_str())
                {
                    return Err(format!("the SVG has {why}"));
                }
            }
        }
    }
    if let Some((open, _)) = stack.last() {
        return Err(malformed(&format!("<{}> is not closed", open.trim_start_matches(':'))));
    }
    if root.is_none() {
        return Err("the file holds no <svg> element".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = r##"<?xml version="1.0" encoding="UTF-8"?>
<!-- logo -->
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 10 10">
  <style>.a { fill: #0a0; } .b { fill: url(#grad); }</style>
  <defs><linearGradient id="grad"><stop offset="0" stop-color="#fff"/></linearGradient></defs>
  <a href="#top"><rect class="a" width="10" height="10"/></a>
  <use xlink:href="#grad"/>
  <image href="data:image/png;base64,iVBORw0KGgo="/>
  <text x="1" y="5">Tom &amp; Jerry</text>
</svg>"##;

    #[test]
    fn plain_drawings_pass() {
        assert_eq!(check(PLAIN.as_bytes()), Ok(()));
        assert_eq!(check("\u{feff}<svg/>".as_bytes()), Ok(()));
    }

    #[test]
    fn anything_that_could_run_or_load_is_refused() {
        for (svg, why) in [
            (r#"<svg><script>alert(1)</script></svg>"#, "<script>"),
            (r#"<svg><SCRIPT>alert(1)</SCRIPT></svg>"#, "<SCRIPT>"),
            (r#"<svg onload="alert(1)"/>"#, "event handler"),
            (r#"<svg><rect OnClick="x()"/></svg>"#, "event handler"),
            (
                r#"<svg><a href="javascript:alert(1)"><text>x</text></a></svg>"#,
                "script link",
            ),
            (r#"<svg><a href="&#106;avascript:alert(1)">x</a></svg>"#, "script link"),
            (r#"<svg><a href="java&#x09;script:alert(1)">x</a></svg>"#, "script link"),
            (
                r#"<svg><a xlink:href=" JaVaScRiPt:alert(1)">x</a></svg>"#,
                "script link",
            ),
            (
                r#"<svg><animate attributeName="href" values="javascript:alert(1)"/></svg>"#,
                "script link",
            ),
            (
                r#"<svg><a href="data:text/html;base64,PHNjcmlwdD4=">x</a></svg>"#,
                "script link",
            ),
            (
                r#"<svg><foreignObject><body xmlns="http://www.w3.org/1999/xhtml"/></foreignObject></svg>"#,
                "<foreignObject>",
            ),
            (
                r#"<svg><image href="https://tracker.example/p.gif"/></svg>"#,
                "outside resource",
            ),
            (r#"<svg><use href="//evil.example/s.svg#x"/></svg>"#, "outside resource"),
            (
                r#"<svg><style>@import url(https://evil.example/x.css);</style></svg>"#,
                "outside resources",
            ),
            (
                r#"<svg><style><![CDATA[ a { background: url(javascript:x) } ]]></style></svg>"#,
                "runs script",
            ),
            (
                r#"<svg><rect style="background:url(//evil.example/x)"/></svg>"#,
                "outside resources",
            ),
            (r#"<?xml-stylesheet href="x.xsl"?><svg/>"#, "processing instruction"),
            (r#"<!DOCTYPE svg [<!ENTITY a "aaaa">]><svg>&a;</svg>"#, "DTD"),
            (r#"<html><svg/></html>"#, "not an SVG"),
            (r#"<svg><rect></svg>"#, "well-formed"),
            ("just text", "well-formed"),
        ] {
            let err = check(svg.as_bytes()).unwrap_err();
            assert!(err.contains(why), "{svg}: {err}");
        }
        assert!(check(&[0xFF, 0xFE, b'<']).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn references_decode_as_a_browser_reads_them() {
        assert_eq!(decode("&#106;&#x61;&amp;&lt;&bogus;&"), "ja&<&bogus;&");
        assert_eq!(squeezed(" Java\tScript:\n"), "javascript:");
    }
}
