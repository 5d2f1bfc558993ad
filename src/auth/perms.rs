//! Whether a set of permissions covers a request's keys.
//!
//! A request names its keys as etcd does (`key` alone, `[key, range_end)`,
//! or every key from `key` on when `range_end` is `"\0"`), and so does a
//! permission. The request is allowed when the union of the caller's
//! permissions of the needed kind covers every key it names: a read of
//! `[a, c)` is allowed by reads on `[a, b)` and `[b, c)` together, as in
//! etcd's interval tree, but not by a read on `a` alone.

use std::cmp::Ordering;

use crate::proto::authpb::Permission;
use crate::proto::authpb::permission::Type;

/// What a request does to its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    /// Whether a permission of this type grants this access.
    fn granted_by(self, perm_type: i32) -> bool {
        match Type::try_from(perm_type) {
            Ok(Type::Readwrite) => true,
            Ok(Type::Read) => self == Access::Read,
            Ok(Type::Write) => self == Access::Write,
            Err(_) => false,
        }
    }
}

/// The end of a half-open key interval: a key, or past every key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    Key(Vec<u8>),
    Unbounded,
}

impl Ord for End {
    fn cmp(&self, other: &End) -> Ordering {
        match (self, other) {
            (End::Key(a), End::Key(b)) => a.cmp(b),
            (End::Key(_), End::Unbounded) => Ordering::Less,
            (End::Unbounded, End::Key(_)) => Ordering::Greater,
            (End::Unbounded, End::Unbounded) => Ordering::Equal,
        }
    }
}

impl PartialOrd for End {
    fn partial_cmp(&self, other: &End) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The half-open interval `(key, range_end)` names: a single key is
/// `[key, key + "\0")`, the smallest interval holding it and nothing else.
fn interval(key: &[u8], range_end: &[u8]) -> (Vec<u8>, End) {
    match range_end {
        [] => {
            let mut next = key.to_vec();
            next.push(0);
            (key.to_vec(), End::Key(next))
        }
        [0] => (key.to_vec(), End::Unbounded),
        end => (key.to_vec(), End::Key(end.to_vec())),
    }
}

/// Whether `perms` grant `access` to every key of `(key, range_end)`.
pub fn covers<'a>(
    perms: impl IntoIterator<Item = &'a Permission>,
    access: Access,
    key: &[u8],
    range_end: &[u8],
) -> bool {
    let (start, end) = interval(key, range_end);
    if End::Key(start.clone()) >= end {
        // An empty range names no key: nothing to protect.
        return true;
    }
    let mut granted: Vec<(Vec<u8>, End)> =
        perms.into_iter().filter(|p| access.granted_by(p.perm_type)).map(|p| interval(&p.key, &p.range_end)).collect();
    granted.sort_by(|a, b| a.0.cmp(&b.0));
    // Sweep from the request's start: each interval that begins at or before
    // the point reached so far extends it; a gap before `end` denies.
    let mut reached = End::Key(start);
    for (from, to) in granted {
        if End::Key(from) > reached {
            break;
        }
        if to > reached {
            reached = to;
        }
        if reached >= end {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: Type, key: &str, range_end: &[u8]) -> Permission {
        Permission { perm_type: t as i32, key: key.as_bytes().to_vec().into(), range_end: range_end.to_vec().into() }
    }

    #[test]
    fn a_key_permission_covers_that_key_only() {
        let perms = [perm(Type::Read, "foo", b"")];
        assert!(covers(&perms, Access::Read, b"foo", b""));
        assert!(!covers(&perms, Access::Read, b"foo0", b""));
        assert!(!covers(&perms, Access::Read, b"fo", b""));
        assert!(!covers(&perms, Access::Read, b"foo", b"fop"));
    }

    #[test]
    fn a_prefix_permission_covers_its_keys_and_sub_ranges_but_not_beyond() {
        let perms = [perm(Type::Readwrite, "app/", b"app0")];
        assert!(covers(&perms, Access::Write, b"app/x", b""));
        assert!(covers(&perms, Access::Read, b"app/", b"app0"));
        assert!(covers(&perms, Access::Read, b"app/a", b"app/b"));
        assert!(!covers(&perms, Access::Read, b"app/", b"app1"));
        assert!(!covers(&perms, Access::Read, b"app", b""));
        assert!(!covers(&perms, Access::Read, b"app/", &[0]));
    }

    #[test]
    fn adjacent_and_overlapping_ranges_cover_their_union_and_a_gap_denies() {
        let perms = [perm(Type::Read, "a", b"c"), perm(Type::Read, "b", b"e"), perm(Type::Read, "f", b"g")];
        assert!(covers(&perms, Access::Read, b"a", b"e"));
        assert!(!covers(&perms, Access::Read, b"a", b"g"));
        assert!(covers(&perms, Access::Read, b"f", b"g"));
    }

    #[test]
    fn a_from_key_permission_covers_everything_after_it() {
        let perms = [perm(Type::Write, "m", &[0])];
        assert!(covers(&perms, Access::Write, b"m", &[0]));
        assert!(covers(&perms, Access::Write, b"zzz", b""));
        assert!(!covers(&perms, Access::Write, b"l", b""));
        assert!(!covers(&perms, Access::Write, &[0], &[0]));
    }

    #[test]
    fn the_permission_type_must_grant_the_access() {
        let read = [perm(Type::Read, "k", b"")];
        let write = [perm(Type::Write, "k", b"")];
        let both = [perm(Type::Readwrite, "k", b"")];
        assert!(covers(&read, Access::Read, b"k", b"") && !covers(&read, Access::Write, b"k", b""));
        assert!(covers(&write, Access::Write, b"k", b"") && !covers(&write, Access::Read, b"k", b""));
        assert!(covers(&both, Access::Read, b"k", b"") && covers(&both, Access::Write, b"k", b""));
        assert!(!covers(&[], Access::Read, b"k", b""));
    }

    #[test]
    fn an_empty_range_names_no_key() {
        assert!(covers(&[], Access::Read, b"b", b"a"));
    }
}
