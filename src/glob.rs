//! Redis-style glob patterns (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), matched ASCII
//! case-insensitively as `CONFIG GET` does.
//!
//! The pattern comes from a client, so the matcher's cost is bounded before any work is done:
//! it is iterative (no recursion, so no stack to overflow) and on a mismatch it backtracks only
//! to the last `*`, never to earlier ones. Every step is counted against the caller's budget, so
//! a command that matches many patterns against many names stops with an error once its budget
//! is spent instead of holding a runtime worker.

/// Steps were spent beyond the budget the caller gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("pattern matching exceeded its budget")]
pub struct OverBudget;

/// Whether `s` matches `pattern`, spending one unit of `budget` per byte of `s` compared and per
/// byte of the pattern read. A match takes at most `(s.len() + 1) * (s.len() + pattern.len() + 1)
/// + pattern.len()` units: each restart from the last `*` begins one byte further into `s`, and
/// reads each byte of `s` and of the pattern at most once.
pub fn matches(pattern: &[u8], s: &[u8], budget: &mut u64) -> Result<bool, OverBudget> {
    let (mut pi, mut si) = (0, 0);
    // The pattern position after the last `*`, and where in `s` the next retry from it begins.
    let mut star: Option<(usize, usize)> = None;
    let mut spend = |n: usize| -> Result<(), OverBudget> {
        *budget = budget.checked_sub(n as u64).ok_or(OverBudget)?;
        Ok(())
    };
    while si < s.len() {
        let step = match pattern.get(pi) {
            Some(b'*') => {
                let after = skip_stars(pattern, pi);
                spend(after - pi)?;
                if after == pattern.len() {
                    return Ok(true);
                }
                star = Some((after, si));
                pi = after;
                continue;
            }
            Some(_) => {
                spend(1)?;
                element(pattern, pi, s[si])
            }
            None => None,
        };
        match step {
            Some(next) => {
                spend(next - pi)?;
                (pi, si) = (next, si + 1);
            }
            None => match star {
                Some((after, retry)) => {
                    star = Some((after, retry + 1));
                    (pi, si) = (after, retry + 1);
                }
                None => return Ok(false),
            },
        }
    }
    let rest = skip_stars(pattern, pi);
    spend(rest - pi)?;
    Ok(rest == pattern.len())
}

fn skip_stars(pattern: &[u8], mut pi: usize) -> usize {
    while pattern.get(pi) == Some(&b'*') {
        pi += 1;
    }
    pi
}

/// Matches the one pattern element at `pi` (not `*`) against `c`: the position after the
/// element if it matches, `None` if not.
fn element(pattern: &[u8], pi: usize, c: u8) -> Option<usize> {
    let c = c.to_ascii_lowercase();
    match pattern[pi] {
        b'?' => Some(pi + 1),
        b'[' => class(pattern, pi + 1, c),
        b'\\' if pi + 1 < pattern.len() => {
            (pattern[pi + 1].to_ascii_lowercase() == c).then_some(pi + 2)
        }
        p => (p.to_ascii_lowercase() == c).then_some(pi + 1),
    }
}

/// A `[...]` class starting after its `[`, as Redis' `stringmatchlen` reads it: `^` negates,
/// `a-z` is a range (either order), `\x` is a literal, and an unclosed class ends the pattern.
fn class(pattern: &[u8], mut pi: usize, c: u8) -> Option<usize> {
    let negate = pattern.get(pi) == Some(&b'^');
    if negate {
        pi += 1;
    }
    let mut hit = false;
    while pi < pattern.len() && pattern[pi] != b']' {
        let lo = match pattern[pi] {
            b'\\' if pi + 1 < pattern.len() => {
                pi += 1;
                pattern[pi]
            }
            b => b,
        };
        if pattern.get(pi + 1) == Some(&b'-') && pi + 2 < pattern.len() {
            let hi = pattern[pi + 2];
            let (a, b) = (lo.to_ascii_lowercase(), hi.to_ascii_lowercase());
            hit |= (a.min(b)..=a.max(b)).contains(&c);
            pi += 3;
        } else {
            hit |= lo.to_ascii_lowercase() == c;
            pi += 1;
        }
    }
    let after = (pi + 1).min(pattern.len());
    (hit != negate).then_some(after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unlimited() -> u64 {
        u64::MAX
    }

    fn m(p: &str, s: &str) -> bool {
        matches(p.as_bytes(), s.as_bytes(), &mut unlimited()).unwrap()
    }

    #[test]
    fn redis_glob_syntax() {
        assert!(m("*", "port"));
        assert!(m("*", ""));
        assert!(m("repl-*", "repl-timeout"));
        assert!(m("p?rt", "port"));
        assert!(!m("repl-*", "port"));
        assert!(m("port", "port"));
        assert!(m("PORT", "port"), "case-insensitive like CONFIG GET");
        assert!(m("*time*", "repl-timeout"));
        assert!(m("*t", "port"));
        assert!(!m("*x", "port"));
        assert!(m("[pq]ort", "port"));
        assert!(!m("[^p]ort", "port"));
        assert!(m("[a-z]ort", "port"));
        assert!(m("[z-a]ort", "port"), "a reversed range still matches");
        assert!(m("p\\ort", "port"));
        assert!(m("a\\*", "a*"));
        assert!(!m("a\\*", "ab"));
        assert!(!m("port?", "port"));
        assert!(m("port**", "port"));
        assert!(!m("[p", "q"));
    }

    #[test]
    fn the_crash_and_freeze_patterns_are_cheap() {
        let stars = vec![b'*'; 40_000];
        assert!(matches(&stars, b"repl-timeout", &mut unlimited()).unwrap());
        let mut hostile = vec![b'*'; 26];
        hostile.push(b'#');
        let mut budget = 10_000;
        assert!(!matches(&hostile, b"repl-diskless-sync-delay", &mut budget).unwrap());
        let mut alternating = b"*a".repeat(64);
        alternating.push(b'#');
        let s = [b'a'; 40];
        let mut budget = 41 * (41 + alternating.len() as u64) + alternating.len() as u64;
        assert!(!matches(&alternating, &s, &mut budget).unwrap());
    }

    #[test]
    fn an_exhausted_budget_is_an_error() {
        let mut budget = 3;
        assert_eq!(
            matches(b"*a*b*c#", b"aaaaaaaaaaaaaaaa", &mut budget),
            Err(OverBudget)
        );
    }

    /// Patterns made of the characters that cost the most: stars, classes, escapes.
    fn pattern() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(&b"*?[]^-\\ab"[..]), 0..200)
    }

    proptest! {
        #[test]
        fn steps_are_bounded_by_the_input_sizes(p in pattern(), s in "[ab*?]{0,64}") {
            let s = s.as_bytes();
            let (sl, pl) = (s.len() as u64, p.len() as u64);
            let bound = (sl + 1) * (sl + pl + 1) + pl;
            let mut budget = bound;
            prop_assert!(matches(&p, s, &mut budget).is_ok(), "over {bound} steps");
        }

        #[test]
        fn agrees_with_a_plain_recursive_matcher(p in "[ab*?]{0,12}", s in "[ab]{0,12}") {
            prop_assert_eq!(
                matches(p.as_bytes(), s.as_bytes(), &mut unlimited()).unwrap(),
                reference(p.as_bytes(), s.as_bytes())
            );
        }
    }

    /// The textbook exponential matcher, for short inputs only.
    fn reference(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => reference(&p[1..], s) || (!s.is_empty() && reference(p, &s[1..])),
            (Some(b'?'), Some(_)) => reference(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => reference(&p[1..], &s[1..]),
            _ => false,
        }
    }
}
