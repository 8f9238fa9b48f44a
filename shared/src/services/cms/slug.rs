//! Slugs: the URL segment of a page or post. Made from the title when none is given (accents
//! folded to ASCII, anything else a hyphen), checked when one is, and on a collision the
//! answer suggests the next free one (`pricing-2`).
use unicode_normalization::UnicodeNormalization;

use crate::domain::validate::Issue;

pub const MAX_LEN: usize = 100;

/// Letters that do not decompose into a base letter and marks.
fn fold(c: char) -> Option<&'static str> {
    Some(match c {
        'ß' => "ss",
        'æ' | 'Æ' => "ae",
        'œ' | 'Œ' => "oe",
        'ø' | 'Ø' => "o",
        'đ' | 'Đ' | 'ð' | 'Ð' => "d",
        'ł' | 'Ł' => "l",
        'þ' | 'Þ' => "th",
        'ı' => "i",
        '&' => "and",
        _ => return None,
    })
}

/// The slug a title makes: lower-case ASCII letters and digits, words joined by single
/// hyphens, at most 100 characters (cut at a hyphen when there is one). `None` when nothing
/// of the title is left (a title in a script without ASCII letters): the caller names one.
pub fn from_title(title: &str) -> Option<String> {
    let mut out = String::with_capacity(title.len());
    let mut hyphen = false;
    for c in title.nfkd() {
        let piece: Option<std::borrow::Cow<'_, str>> = if c.is_ascii_alphanumeric() {
            Some(c.to_ascii_lowercase().to_string().into())
        } else if let Some(f) = fold(c) {
            Some(f.into())
        } else if unicode_normalization::char::is_combining_mark(c) || c == '\'' || c == '’' {
            // Accents go with their letter; apostrophes join the word (`don't` → `dont`).
            continue;
        } else {
            None
        };
        match piece {
            Some(p) => {
                if hyphen && !out.is_empty() {
                    out.push('-');
                }
                hyphen = false;
                out.push_str(&p);
            }
            None => hyphen = true,
        }
    }
    if out.len() > MAX_LEN {
        let cut = out
            .get(..=MAX_LEN)
            .and_then(|head| head.rfind('-'))
            .filter(|&i| i > 0)
            .unwrap_or(MAX_LEN);
        out.truncate(cut);
        while out.ends_with('-') {
            out.pop();
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A slug as given: 1 to 100 of `a-z`, `0-9` and single inner hyphens.
pub fn parse(raw: &str) -> Result<String, Issue> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_LEN
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !raw.starts_with('-')
        && !raw.ends_with('-')
        && !raw.contains("--");
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(Issue::new(
            "invalid_slug",
            format!(
                "must be 1 to {MAX_LEN} lower-case letters, digits and single hyphens between them, e.g. {}",
                from_title(raw).unwrap_or_else(|| "about-us".to_owned())
            ),
        ))
    }
}

/// The first of `slug-2`, `slug-3`, … that `taken` does not hold (the suggestion of a 409).
pub fn suggest(slug: &str, taken: impl Fn(&str) -> bool) -> String {
    (2..)
        .map(|n| {
            let suffix = format!("-{n}");
            let head_len = MAX_LEN.saturating_sub(suffix.len()).min(slug.len());
            let head = slug.get(..head_len).unwrap_or(slug).trim_end_matches('-');
            format!("{head}{suffix}")
        })
        .find(|candidate| !taken(candidate))
        .unwrap_or_else(|| format!("{slug}-copy"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_become_ascii_words_joined_by_hyphens() {
        for (title, slug) in [
            ("About Us", "about-us"),
            ("  Crème brûlée: our recipe!  ", "creme-brulee-our-recipe"),
            ("Straße & Café", "strasse-and-cafe"),
            ("Don't panic — 42", "dont-panic-42"),
            ("Łódź, Øresund, Æsir", "lodz-oresund-aesir"),
            ("ｆｕｌｌ ｗｉｄｔｈ", "full-width"),
            ("2026/11 --- news", "2026-11-news"),
        ] {
            assert_eq!(from_title(title).as_deref(), Some(slug), "{title}");
        }
        assert_eq!(from_title("Привет"), None);
        assert_eq!(from_title("!!!"), None);
        let long = from_title(&"word ".repeat(40)).unwrap_or_default();
        assert!(
            long.len() <= MAX_LEN && long.ends_with("word") && !long.contains("--"),
            "{long}"
        );
    }

    #[test]
    fn given_slugs_are_checked() {
        assert!(parse("pricing").is_ok());
        assert!(parse("spring-sale-2026").is_ok());
        for bad in ["", "Pricing", "-a", "a-", "a--b", "a b", "ä", "a/b", &"a".repeat(101)] {
            let issue = parse(bad).unwrap_err();
            assert_eq!(issue.code, "invalid_slug", "{bad}");
        }
        assert!(parse("Über Uns").unwrap_err().message.contains("uber-uns"));
    }

    #[test]
    fn collisions_suggest_the_next_free_number() {
        let taken = ["pricing", "pricing-2", "pricing-3"];
        assert_eq!(suggest("pricing", |s| taken.contains(&s)), "pricing-4");
        assert_eq!(suggest("news", |_| false), "news-2");
        let long = "a".repeat(MAX_LEN);
        let s = suggest(&long, |_| false);
        assert!(s.len() <= MAX_LEN && s.ends_with("-2"), "{s}");
    }
}
