//! Fractional ranks: the order of cards in a board column as strings that sort bytewise
//! (`COLLATE "C"`), so a card moves between two neighbours by taking a key between theirs —
//! one row written, the column never renumbered. Keys are base-62 fractions in (0, 1) without
//! trailing zeros, so there is always room on either side. Squeezing into the same gap again
//! and again halves it each time: a key grows by about one character per six squeezes. The
//! ends step by one digit instead of halving: appending (or prepending) adds a character only
//! once per ~60 cards.
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

/// A short key above `a` (a valid key): its first digit plus one, or `z` and the same again
/// for the rest.
fn increment(a: &[u8]) -> Vec<u8> {
    match a.split_first() {
        None => midpoint(&[], None),
        Some((first, rest)) => match digit(*first) {
            Some(d) if d + 1 < BASE => vec![digit_char(d + 1)],
            _ => {
                let mut out = vec![*first];
                out.extend(increment(rest));
                out
            }
        },
    }
}

/// A short key below `b` (a valid key, so above 0): its first digit minus one when that is not
/// `0`, else the first digit and a key below the rest.
fn decrement(b: &[u8]) -> Vec<u8> {
    match b.split_first() {
        None => Vec::new(),
        Some((first, rest)) => match digit(*first) {
            Some(d) if d > 1 => vec![digit_char(d - 1)],
            // "1x..." is above "1"; "1" itself is above "0V".
            Some(1) if !rest.is_empty() => vec![*first],
            Some(1) => {
                let mut out = vec![b'0'];
                out.extend(midpoint(&[], None));
                out
            }
            _ => {
                let mut out = vec![*first];
                out.extend(decrement(rest));
                out
            }
        },
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
    let key = match (before, after) {
        (Some(a), None) => increment(a.as_bytes()),
        (None, Some(b)) => decrement(b.as_bytes()),
        (a, b) => midpoint(a.unwrap_or("").as_bytes(), b.map(str::as_bytes)),
    };
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
        assert!(lo.len() < 45, "about one character per six squeezes: {lo}");
        // Always prepending and appending.
        let (mut top, mut bottom) = (first.clone(), first);
        for _ in 0..1000 {
            let t = between(None, Some(&top)).unwrap();
            let b = between(Some(&bottom), None).unwrap();
            assert!(
                t < top && b > bottom && is_valid(&t) && is_valid(&b),
                "{t} {top} {b} {bottom}"
            );
            (top, bottom) = (t, b);
        }
        assert!(
            top.len() <= 40 && bottom.len() <= 40,
            "one character per ~60 cards: {top} {bottom}"
        );
        // Random insertions anywhere in a column (a fixed LCG): the keys stay strictly ordered.
        let mut column: Vec<String> = Vec::new();
        let mut seed: u64 = 42;
        for _ in 0..2000 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let at = (seed >> 33) as usize % (column.len() + 1);
            let key = between(
                at.checked_sub(1).map(|i| column[i].as_str()),
                column.get(at).map(String::as_str),
            )
            .unwrap();
            assert!(is_valid(&key));
            column.insert(at, key);
        }
        assert!(column.windows(2).all(|w| w[0] < w[1]));
        assert!(between(Some("b"), Some("a")).is_err());
        assert!(between(Some("a0"), None).is_err());
        assert!(between(Some("a!"), None).is_err());
    }
}
