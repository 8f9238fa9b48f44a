//! Fractional ranks: the order of cards in a board column as strings that sort bytewise
//! (`COLLATE "C"`), so a card moves between two neighbours by taking a key between theirs —
//! one row written, the column never renumbered. Keys are base-62 fractions in (0, 1) without
//! trailing zeros, so there is always room on either side; a key grows by about one character
//! per 62 squeezes into the same gap.
//!
//! The midpoint is the one of Evan Wallace's and Rocicorp's fractional indexing, over digits
//! `0-9A-Za-z` (ascending in ASCII).

const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE: usize = 62;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RankError {
    #[error("not a rank key: {0:?}")]
    Invalid(String),
    #[error("{0:?} is not below {1:?}")]
    Unordered(String, String),
}

fn digit(c: u8) -> Option<usize> {
    DIGITS.iter().position(|d| *d == c)
}

/// A key is 1 or more base-62 digits not ending in `0`.
pub fn is_valid(key: &str) -> bool {
    !key.is_empty() && !key.ends_with('0') && key.bytes().all(|c| digit(c).is_some())
}

fn digit_char(d: usize) -> u8 {
    DIGITS.get(d).copied().unwrap_or(b'z')
}

/// The digits of `a` (a fraction, `""` = 0) and `b` (`None` = 1) have `a < b`.
fn midpoint(a: &[u8], b: Option<&[u8]>) -> Vec<u8> {
    if let Some(b) = b {
        // The common prefix (a's missing digits count as 0) stays.
        let n = b
            .iter()
            .enumerate()
            .take_while(|(i, c)| a.get(*i).copied().unwrap_or(b'0') == **c)
            .count();
        if n > 0 {
            let (prefix, rest) = b.split_at(n);
            let mut out = prefix.to_vec();
            out.extend(midpoint(a.get(n..).unwrap_or_default(), Some(rest)));
            return out;
        }
    }
    let da = a.first().and_then(|c| digit(*c)).unwrap_or(0);
    let db = b.and_then(|b| b.first()).and_then(|c| digit(*c)).unwrap_or(BASE);
    if db > da + 1 {
        return vec![digit_char((da + db).div_ceil(2))];
    }
    // Adjacent first digits.
    match b.and_then(|b| b.split_first()) {
        Some((first, rest)) if !rest.is_empty() => vec![*first],
        _ => {
            let mut out = vec![digit_char(da)];
            out.extend(midpoint(a.get(1..).unwrap_or_default(), None));
            out
        }
    }
}

/// A key strictly between `before` and `after` (`None`: the start or the end of the column).
pub fn between(before: Option<&str>, after: Option<&str>) -> Result<String, RankError> {
    for key in [before, after].into_iter().flatten() {
        if !is_valid(key) {
            return Err(RankError::Invalid(key.to_owned()));
        }
    }
    if let (Some(a), Some(b)) = (before, after)
        && a >= b
    {
        return Err(RankError::Unordered(a.to_owned(), b.to_owned()));
    }
    let key = midpoint(before.unwrap_or("").as_bytes(), after.map(str::as_bytes));
    String::from_utf8(key).map_err(|e| RankError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fall_between_their_neighbours() {
        let first = between(None, None).unwrap();
        assert_eq!(first, "V");
        let after = between(Some(&first), None).unwrap();
        let before = between(None, Some(&first)).unwrap();
        assert!(before < first && first < after, "{before} {first} {after}");
        // Squeezing into the same gap again and again keeps order and stays short.
        let (mut lo, hi) = (first.clone(), after.clone());
        for _ in 0..200 {
            let mid = between(Some(&lo), Some(&hi)).unwrap();
            assert!(lo < mid && mid < hi, "{lo} < {mid} < {hi}");
            assert!(is_valid(&mid));
            lo = mid;
        }
        assert!(lo.len() < 12, "{lo}");
        // Always prepending and appending.
        let (mut top, mut bottom) = (first.clone(), first);
        for _ in 0..500 {
            let t = between(None, Some(&top)).unwrap();
            let b = between(Some(&bottom), None).unwrap();
            assert!(t < top && b > bottom && is_valid(&t) && is_valid(&b));
            (top, bottom) = (t, b);
        }
        assert!(between(Some("b"), Some("a")).is_err());
        assert!(between(Some("a0"), None).is_err());
        assert!(between(Some("a!"), None).is_err());
    }
}
