//! Redis's glob patterns (`stringmatchlen`): `*`, `?`, `[...]` classes with
//! `^` and ranges, and `\` escapes. Used where the proxy itself must decide
//! what a client's pattern matches: CONFIG GET of the proxy's own settings.

/// Whether `pattern` matches all of `s` (`nocase`: ASCII case ignored, as
/// CONFIG GET does). Linear in `pattern.len() * s.len()`: a pattern with
/// many stars cannot make it backtrack exponentially.
pub fn matches(pattern: &[u8], s: &[u8], nocase: bool) -> bool {
    let mut memo = vec![None; (pattern.len() + 1) * (s.len() + 1)];
    Matcher {
        pattern,
        s,
        nocase,
        memo: &mut memo,
    }
    .at(0, 0)
}

struct Matcher<'a> {
    pattern: &'a [u8],
    s: &'a [u8],
    nocase: bool,
    /// Whether `pattern[p..]` matches `s[i..]`, by `p * (s.len() + 1) + i`.
    memo: &'a mut [Option<bool>],
}

impl Matcher<'_> {
    fn at(&mut self, p: usize, i: usize) -> bool {
        let slot = p * (self.s.len() + 1) + i;
        if let Some(known) = self.memo[slot] {
            return known;
        }
        let (pattern, s) = (&self.pattern[p..], &self.s[i..]);
        let eq = |a: u8, b: u8| a == b || (self.nocase && a.eq_ignore_ascii_case(&b));
        let result = match (pattern.split_first(), s.first()) {
            (None, _) => s.is_empty(),
            // A star takes nothing, or one more byte.
            (Some((b'*', _)), _) => self.at(p + 1, i) || (!s.is_empty() && self.at(p, i + 1)),
            (Some(_), None) => false,
            (Some((b'?', _)), Some(_)) => self.at(p + 1, i + 1),
            (Some((b'[', rest)), Some(&c)) => {
                let (hit, after) = class(rest, c, self.nocase);
                hit && self.at(self.pattern.len() - after.len(), i + 1)
            }
            (Some((b'\\', rest)), Some(&c)) if !rest.is_empty() => {
                eq(rest[0], c) && self.at(p + 2, i + 1)
            }
            (Some((&a, _)), Some(&c)) => eq(a, c) && self.at(p + 1, i + 1),
        };
        self.memo[slot] = Some(result);
        result
    }
}

/// Matches `c` against the class that starts `pattern` (after its `[`):
/// whether it matched, and the pattern after the class. An unterminated
/// class ends with the pattern, as in Redis.
fn class(pattern: &[u8], c: u8, nocase: bool) -> (bool, &[u8]) {
    let (negate, mut p) = match pattern.split_first() {
        Some((b'^', rest)) => (true, rest),
        _ => (false, pattern),
    };
    let fold = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
    let c = fold(c);
    let mut hit = false;
    loop {
        match p {
            [] => break,
            [b']', rest @ ..] => {
                p = rest;
                break;
            }
            [b'\\', e, rest @ ..] => {
                hit |= fold(*e) == c;
                p = rest;
            }
            [a, b'-', b, rest @ ..] => {
                let (a, b) = (fold(*a), fold(*b));
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                hit |= (lo..=hi).contains(&c);
                p = rest;
            }
            [a, rest @ ..] => {
                hit |= fold(*a) == c;
                p = rest;
            }
        }
    }
    (hit != negate, p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(p: &str, s: &str) -> bool {
        matches(p.as_bytes(), s.as_bytes(), false)
    }

    #[test]
    fn redis_glob_cases() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("slowlog*", "slowlog-max-len"));
        assert!(m("*max*", "slowlog-max-len"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(!m("slowlog", "slowlog-max-len"));
        assert!(matches(b"SLOWLOG-*", b"slowlog-max-len", true));
        assert!(!matches(b"SLOWLOG-*", b"slowlog-max-len", false));
        assert!(matches(b"[S]lowlog*", b"slowlog-max-len", true));
        // Many stars against a long miss: memoized, not exponential.
        let p = "*a".repeat(40) + "b";
        assert!(!m(&p, &"a".repeat(200)));
    }

    proptest! {
        /// A pattern without special bytes matches exactly itself; with a
        /// star appended, every extension of itself.
        #[test]
        fn literals(s in "[a-z0-9-]{0,20}", tail in "[a-z0-9-]{0,8}") {
            prop_assert!(m(&s, &s));
            let star = format!("{s}*");
            let longer = format!("{s}{tail}");
            prop_assert!(m(&star, &longer));
            if !tail.is_empty() {
                prop_assert!(!m(&s, &longer));
            }
        }
    }
}
