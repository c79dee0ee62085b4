//! The xCAT noderange grammar. Pure: no I/O, no async, no database.
//!
//! A noderange is a comma-separated list of items, read left to right. Each item adds names to the
//! result or, prefixed with `-`, removes them:
//!
//! | item | meaning |
//! |---|---|
//! | `node01` | that node, or the members of group `node01` if such a group exists |
//! | `all` | every known node |
//! | `node[01-10]`, `node[01:10]`, `node[1,3,5-7]` | bracket ranges; zero padding of the start is kept |
//! | `rack[1-3]n[1-20]` | several brackets: every combination |
//! | `node01-node10`, `node01:node10` | a range written with both ends (same prefix and suffix) |
//! | `node10+5` | `node10` and the 5 names after it |
//! | `/^cn.*$/`, `/cn[12].*` | every known node whose whole name matches the regular expression |
//! | `a@b` | names in both `a` and `b` |
//! | `-x` | removes what `x` expands to from the names gathered so far |
//!
//! Group membership and the set of known nodes come from a caller-supplied [`Universe`], so this
//! crate never touches the inventory itself. Expansion stops with [`Error::TooLarge`] as soon as the
//! result would exceed the limit (default [`DEFAULT_LIMIT`]); the size of a range is computed before
//! any of its names are built (with saturating arithmetic), so `node[1-1000000000]` fails at once
//! without allocating. The limit bounds the result; a separate work budget ([`WORK_FACTOR`] times
//! the limit) bounds every name looked at on the way, exclusions, intersections, groups and regular
//! expression scans included, so no noderange costs more than a few times the largest result.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

/// The largest number of names a noderange may expand to unless the caller says otherwise.
pub const DEFAULT_LIMIT: usize = 100_000;

/// Longest noderange text accepted, in bytes. Longer lists of names belong in a file
/// (`xcat3 create -f`), not in a noderange.
pub const MAX_INPUT_LEN: usize = 64 << 10;

/// How many names an expansion may produce or look at in all, as a multiple of its limit: every
/// item counts, whether it adds, removes or intersects, and a regular expression counts every name
/// it is matched against.
pub const WORK_FACTOR: usize = 4;

/// What a noderange is resolved against: the known nodes and the groups.
pub trait Universe {
    /// Every known node name, in any order.
    fn all_nodes(&self) -> Vec<String>;
    /// The members of group `name`, or `None` when there is no such group.
    fn group(&self, name: &str) -> Option<Vec<String>>;
    /// Whether `name` is a known node. Used to tell a node called `a-b` from the range `a-b`.
    fn has_node(&self, name: &str) -> bool;
}

/// A universe with no nodes and no groups: ranges and plain names only (used when creating nodes).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoUniverse;

impl Universe for NoUniverse {
    fn all_nodes(&self) -> Vec<String> {
        Vec::new()
    }
    fn group(&self, _name: &str) -> Option<Vec<String>> {
        None
    }
    fn has_node(&self, _name: &str) -> bool {
        false
    }
}

/// Why a noderange could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("empty noderange")]
    Empty,
    #[error("noderange is longer than {MAX_INPUT_LEN} bytes")]
    InputTooLong,
    #[error("{token:?}: {reason}")]
    Syntax { token: String, reason: String },
    #[error("{token:?}: invalid regular expression: {reason}")]
    Regex { token: String, reason: String },
    #[error("expands to more than {limit} names (at {token:?}); narrow it or raise the limit")]
    TooLarge { limit: usize, token: String },
    #[error(
        "needs more than {budget} names of work in all (at {token:?}): too many repeated or \
         excluded items; simplify it"
    )]
    TooMuchWork { budget: usize, token: String },
}

/// The work an expansion may still do, in names produced or looked at.
struct Budget {
    total: usize,
    left: usize,
}

impl Budget {
    fn new(limit: usize) -> Self {
        let total = limit.saturating_mul(WORK_FACTOR).max(WORK_FACTOR);
        Budget { total, left: total }
    }

    /// Takes `cost` from the budget, failing (and naming `token`) when it is spent.
    fn charge(&mut self, cost: u128, token: &str) -> Result<(), Error> {
        match usize::try_from(cost) {
            Ok(cost) if cost <= self.left => {
                self.left -= cost;
                Ok(())
            }
            _ => {
                self.left = 0;
                Err(Error::TooMuchWork {
                    budget: self.total,
                    token: token.to_owned(),
                })
            }
        }
    }
}

fn syntax(token: &str, reason: impl Into<String>) -> Error {
    Error::Syntax {
        token: token.to_owned(),
        reason: reason.into(),
    }
}

/// Expands `expr` against `universe` with the [`DEFAULT_LIMIT`].
pub fn expand(expr: &str, universe: &dyn Universe) -> Result<Vec<String>, Error> {
    expand_with_limit(expr, universe, DEFAULT_LIMIT)
}

/// Expands `expr` against `universe`; fails if the result (or any single item) exceeds `limit`.
pub fn expand_with_limit(
    expr: &str,
    universe: &dyn Universe,
    limit: usize,
) -> Result<Vec<String>, Error> {
    if expr.len() > MAX_INPUT_LEN {
        return Err(Error::InputTooLong);
    }
    let items = split_items(expr)?;
    let mut acc = OrderedSet::default();
    let mut cache = UniverseCache::new(universe, limit);
    for item in items {
        cache.budget.charge(1, item)?;
        if let Some(excluded) = item.strip_prefix('-') {
            if excluded.is_empty() {
                return Err(syntax(item, "nothing after '-'"));
            }
            for name in expand_intersection(excluded, &mut cache, limit)? {
                acc.remove(&name);
            }
        } else {
            for name in expand_intersection(item, &mut cache, limit)? {
                acc.insert(name);
                if acc.len() > limit {
                    return Err(Error::TooLarge {
                        limit,
                        token: item.to_owned(),
                    });
                }
            }
        }
    }
    Ok(acc.into_vec())
}

/// Splits on commas that are not inside `[...]` or `{...}` (regex repetition like `{1,3}`).
fn split_items(expr: &str) -> Result<Vec<&str>, Error> {
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err(Error::Empty);
    }
    let mut items = Vec::new();
    let mut depth_square = 0i32;
    let mut depth_curly = 0i32;
    let mut start = 0;
    for (i, c) in trimmed.char_indices() {
        match c {
            '[' => depth_square += 1,
            ']' => depth_square -= 1,
            '{' => depth_curly += 1,
            '}' => depth_curly -= 1,
            ',' if depth_square <= 0 && depth_curly <= 0 => {
                items.push(trimmed[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(trimmed[start..].trim());
    if depth_square != 0 {
        return Err(syntax(trimmed, "unbalanced '[' and ']'"));
    }
    if let Some(bad) = items.iter().find(|s| s.is_empty()) {
        return Err(syntax(bad, "empty item between commas"));
    }
    Ok(items)
}

/// Memoises the universe's answers for one expansion (a group may be named many times), and
/// carries the expansion's work budget.
struct UniverseCache<'a> {
    universe: &'a dyn Universe,
    all: Option<Vec<String>>,
    budget: Budget,
}

impl<'a> UniverseCache<'a> {
    fn new(universe: &'a dyn Universe, limit: usize) -> Self {
        Self {
            universe,
            all: None,
            budget: Budget::new(limit),
        }
    }

    /// Every known node, charged to the budget.
    fn charged_all(&mut self, token: &str) -> Result<&[String], Error> {
        let len = self.all().len();
        self.budget.charge(len as u128, token)?;
        Ok(self.all())
    }

    /// The members of group `name`, charged to the budget.
    fn charged_group(&mut self, name: &str, token: &str) -> Result<Option<Vec<String>>, Error> {
        let members = self.universe.group(name);
        if let Some(m) = &members {
            self.budget.charge(m.len() as u128, token)?;
        }
        Ok(members)
    }

    fn all(&mut self) -> &[String] {
        let universe = self.universe;
        self.all.get_or_insert_with(|| {
            let mut all = universe.all_nodes();
            all.sort_by(|a, b| natural_cmp(a, b));
            all
        })
    }
}

fn expand_intersection(
    item: &str,
    cache: &mut UniverseCache<'_>,
    limit: usize,
) -> Result<Vec<String>, Error> {
    if !item.contains('@') || item.starts_with('/') {
        return expand_term(item, cache, limit);
    }
    let mut parts = item.split('@');
    let first = parts.next().unwrap_or_default();
    let mut result = expand_term(first, cache, limit)?;
    for part in parts {
        let other: HashSet<String> = expand_term(part, cache, limit)?.into_iter().collect();
        result.retain(|n| other.contains(n));
    }
    Ok(result)
}

fn expand_term(
    term: &str,
    cache: &mut UniverseCache<'_>,
    limit: usize,
) -> Result<Vec<String>, Error> {
    if term.is_empty() {
        return Err(syntax(term, "empty term"));
    }
    if let Some(pattern) = term.strip_prefix('/') {
        return expand_regex(term, pattern, cache);
    }
    if term == "all" {
        return Ok(cache.charged_all(term)?.to_vec());
    }
    if term.contains('[') || term.contains(']') {
        return expand_brackets(term, limit, &mut cache.budget);
    }
    // A known node or group wins over range syntax, so `rack1-n1` stays a node name.
    if cache.universe.has_node(term) {
        return Ok(vec![term.to_owned()]);
    }
    if let Some(mut members) = cache.charged_group(term, term)? {
        members.sort_by(|a, b| natural_cmp(a, b));
        return Ok(members);
    }
    if let Some((start, count)) = term.split_once('+') {
        return expand_increment(term, start, count, limit, &mut cache.budget);
    }
    for sep in ['-', ':'] {
        if let Some(names) = expand_dash_range(term, sep, cache, limit)? {
            return Ok(names);
        }
    }
    Ok(vec![term.to_owned()])
}

fn expand_regex(
    term: &str,
    pattern: &str,
    cache: &mut UniverseCache<'_>,
) -> Result<Vec<String>, Error> {
    let pattern = pattern.strip_suffix('/').unwrap_or(pattern);
    if pattern.is_empty() {
        return Err(syntax(term, "empty regular expression"));
    }
    let re = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| Error::Regex {
            token: term.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(cache
        .charged_all(term)?
        .iter()
        .filter(|n| re.is_match(n))
        .cloned()
        .collect())
}

/// A number as written in a range: its value and the width to pad to (0 = no padding).
#[derive(Debug, Clone, Copy)]
struct Num {
    value: u64,
    width: usize,
}

fn parse_num(token: &str, digits: &str) -> Result<Num, Error> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax(token, format!("{digits:?} is not a number")));
    }
    if digits.len() > 18 {
        return Err(syntax(token, format!("{digits:?} is too large")));
    }
    let value = digits
        .parse()
        .map_err(|_| syntax(token, format!("{digits:?} is not a number")))?;
    let width = if digits.len() > 1 && digits.starts_with('0') {
        digits.len()
    } else {
        0
    };
    Ok(Num { value, width })
}

fn format_num(value: u64, width: usize) -> String {
    format!("{value:0width$}")
}

/// One segment of a bracket expression: either fixed text or a set of numbers.
enum Segment {
    Text(String),
    Numbers(Vec<(u64, u64, usize)>),
}

impl Segment {
    fn count(&self) -> u128 {
        match self {
            Segment::Text(_) => 1,
            Segment::Numbers(ranges) => ranges.iter().fold(0u128, |n, (a, b, _)| {
                n.saturating_add(u128::from(b - a) + 1)
            }),
        }
    }
}

fn expand_brackets(term: &str, limit: usize, budget: &mut Budget) -> Result<Vec<String>, Error> {
    let mut segments = Vec::new();
    let mut rest = term;
    while let Some(open) = rest.find('[') {
        let close = rest[open..]
            .find(']')
            .map(|c| c + open)
            .ok_or_else(|| syntax(term, "'[' without ']'"))?;
        let text = &rest[..open];
        if text.contains(']') {
            return Err(syntax(term, "']' without '['"));
        }
        if !text.is_empty() {
            segments.push(Segment::Text(text.to_owned()));
        }
        segments.push(parse_bracket(term, &rest[open + 1..close])?);
        rest = &rest[close + 1..];
    }
    if rest.contains(']') {
        return Err(syntax(term, "']' without '['"));
    }
    if !rest.is_empty() {
        segments.push(Segment::Text(rest.to_owned()));
    }
    // Saturating: two brackets of 2^64 names each must not multiply to 0.
    let total = segments
        .iter()
        .fold(1u128, |n, s| n.saturating_mul(s.count()));
    if total > limit as u128 {
        return Err(Error::TooLarge {
            limit,
            token: term.to_owned(),
        });
    }
    budget.charge(total, term)?;
    let mut names = vec![String::new()];
    for segment in &segments {
        names = match segment {
            Segment::Text(text) => names.into_iter().map(|n| n + text).collect(),
            Segment::Numbers(ranges) => {
                let mut next = Vec::with_capacity(names.len() * segment.count() as usize);
                for prefix in &names {
                    for &(a, b, width) in ranges {
                        for v in a..=b {
                            next.push(format!("{prefix}{}", format_num(v, width)));
                        }
                    }
                }
                next
            }
        };
    }
    Ok(names)
}

fn parse_bracket(term: &str, inner: &str) -> Result<Segment, Error> {
    if inner.is_empty() {
        return Err(syntax(term, "empty '[]'"));
    }
    let mut ranges = Vec::new();
    for part in inner.split(',') {
        let (a, b) = match part.split_once(['-', ':']) {
            Some((a, b)) => (parse_num(term, a)?, parse_num(term, b)?),
            None => {
                let n = parse_num(term, part)?;
                (n, n)
            }
        };
        if a.value > b.value {
            return Err(syntax(
                term,
                format!("range {part:?} goes down; write the smaller number first"),
            ));
        }
        ranges.push((a.value, b.value, a.width));
    }
    Ok(Segment::Numbers(ranges))
}

/// Splits `node0042x` into (`node`, `0042`, `x`): the last run of digits and what surrounds it.
fn split_number(name: &str) -> Option<(&str, &str, &str)> {
    let bytes = name.as_bytes();
    let end = bytes.iter().rposition(|b| b.is_ascii_digit())? + 1;
    let start = bytes[..end]
        .iter()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |p| p + 1);
    Some((&name[..start], &name[start..end], &name[end..]))
}

fn expand_increment(
    term: &str,
    start: &str,
    count: &str,
    limit: usize,
    budget: &mut Budget,
) -> Result<Vec<String>, Error> {
    let (prefix, digits, suffix) = split_number(start)
        .filter(|(_, _, suffix)| suffix.is_empty())
        .ok_or_else(|| syntax(term, "'+' needs a name ending in a number, like node10+5"))?;
    let first = parse_num(term, digits)?;
    let count = parse_num(term, count)?.value;
    if count as u128 + 1 > limit as u128 {
        return Err(Error::TooLarge {
            limit,
            token: term.to_owned(),
        });
    }
    budget.charge(count as u128 + 1, term)?;
    let width = if digits.starts_with('0') {
        digits.len()
    } else {
        first.width
    };
    let last = first
        .value
        .checked_add(count)
        .ok_or_else(|| syntax(term, "range end overflows"))?;
    Ok((first.value..=last)
        .map(|v| format!("{prefix}{}{suffix}", format_num(v, width)))
        .collect())
}

/// `node01-node10` or `group1:group3`. Returns `None` when the term is not a range.
fn expand_dash_range(
    term: &str,
    sep: char,
    cache: &mut UniverseCache<'_>,
    limit: usize,
) -> Result<Option<Vec<String>>, Error> {
    let Some((left, right)) = term.split_once(sep) else {
        return Ok(None);
    };
    let (Some((lp, ld, ls)), Some((rp, rd, rs))) = (split_number(left), split_number(right)) else {
        return Ok(None);
    };
    if lp != rp || ls != rs {
        return Ok(None);
    }
    let a = parse_num(term, ld)?;
    let b = parse_num(term, rd)?;
    if a.value > b.value {
        return Err(syntax(
            term,
            "range goes down; write the smaller name first",
        ));
    }
    if (b.value - a.value) as u128 + 1 > limit as u128 {
        return Err(Error::TooLarge {
            limit,
            token: term.to_owned(),
        });
    }
    cache.budget.charge((b.value - a.value) as u128 + 1, term)?;
    // "node001-node200": pad to the width written on the left (xCAT's padding detection).
    let width = if ld.len() > 1 && ld.starts_with('0') || ld.len() == rd.len() && ld.len() > 1 {
        ld.len()
    } else {
        0
    };
    let mut names = Vec::new();
    for v in a.value..=b.value {
        let name = format!("{lp}{}{ls}", format_num(v, width));
        // group1-group3 expands each group that exists.
        let group = if cache.universe.has_node(&name) {
            None
        } else {
            cache.charged_group(&name, term)?
        };
        match group {
            Some(mut members) => {
                members.sort_by(|x, y| natural_cmp(x, y));
                names.extend(members);
            }
            None => names.push(name),
        }
    }
    Ok(Some(names))
}

/// Orders names the way people count: `node2` before `node10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let la = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let lb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (&a[..la], &b[..lb]);
                let ta = trim_zeros(da);
                let tb = trim_zeros(db);
                let ord = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
                if ord != Ordering::Equal {
                    return ord;
                }
                let ord = la.cmp(&lb);
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[la..];
                b = &b[lb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let first = d.iter().position(|&c| c != b'0').unwrap_or(d.len());
    &d[first..]
}

/// Insertion-ordered set with removal.
#[derive(Default)]
struct OrderedSet {
    items: Vec<Option<String>>,
    index: HashMap<String, usize>,
    live: usize,
}

impl OrderedSet {
    fn insert(&mut self, name: String) {
        if !self.index.contains_key(&name) {
            self.index.insert(name.clone(), self.items.len());
            self.items.push(Some(name));
            self.live += 1;
        }
    }

    fn remove(&mut self, name: &str) {
        if let Some(i) = self.index.remove(name) {
            self.items[i] = None;
            self.live -= 1;
        }
    }

    fn len(&self) -> usize {
        self.live
    }

    fn into_vec(self) -> Vec<String> {
        self.items.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A small inventory: cn1..cn12, rack1-n1 (a node whose name looks like a range),
    /// groups compute (cn1..cn6), gpu (cn5..cn8), group1..group3.
    struct Inv {
        nodes: Vec<String>,
        groups: BTreeMap<String, Vec<String>>,
    }

    fn inv() -> Inv {
        let mut nodes: Vec<String> = (1..=12).map(|i| format!("cn{i}")).collect();
        nodes.push("rack1-n1".into());
        let mut groups = BTreeMap::new();
        groups.insert(
            "compute".into(),
            (1..=6).map(|i| format!("cn{i}")).collect(),
        );
        groups.insert("gpu".into(), (5..=8).map(|i| format!("cn{i}")).collect());
        groups.insert("group1".into(), vec!["cn1".into()]);
        groups.insert("group2".into(), vec!["cn2".into()]);
        groups.insert("group3".into(), vec!["cn3".into()]);
        Inv { nodes, groups }
    }

    impl Universe for Inv {
        fn all_nodes(&self) -> Vec<String> {
            self.nodes.clone()
        }
        fn group(&self, name: &str) -> Option<Vec<String>> {
            self.groups.get(name).cloned()
        }
        fn has_node(&self, name: &str) -> bool {
            self.nodes.iter().any(|n| n == name)
        }
    }

    fn ex(expr: &str) -> Vec<String> {
        expand(expr, &inv()).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    fn names(list: &str) -> Vec<String> {
        list.split(' ').map(String::from).collect()
    }

    #[test]
    fn plain_names_keep_order_and_drop_duplicates() {
        assert_eq!(ex("node02,node01,node02"), names("node02 node01"));
        assert_eq!(ex(" node1 , node2 "), names("node1 node2"));
    }

    #[test]
    fn bracket_range_keeps_zero_padding() {
        let r = ex("node[01-100]");
        assert_eq!(r.len(), 100);
        assert_eq!(r[0], "node01");
        assert_eq!(r[8], "node09");
        assert_eq!(r[98], "node99");
        assert_eq!(r[99], "node100");
        assert_eq!(ex("node[1-3]"), names("node1 node2 node3"));
        assert_eq!(ex("node[001:003]"), names("node001 node002 node003"));
    }

    #[test]
    fn bracket_lists_and_suffixes() {
        assert_eq!(
            ex("n[1,3,5-6]-ib"),
            names("n1-ib n3-ib n5-ib n6-ib"),
            "a list inside brackets is not split into items"
        );
    }

    #[test]
    fn several_brackets_make_every_combination() {
        let r = ex("rack[1-3]n[1-20]");
        assert_eq!(r.len(), 60);
        assert_eq!(r[0], "rack1n1");
        assert_eq!(r[19], "rack1n20");
        assert_eq!(r[20], "rack2n1");
        assert_eq!(r[59], "rack3n20");
        assert_eq!(ex("f[1-2]n[1-3]"), names("f1n1 f1n2 f1n3 f2n1 f2n2 f2n3"));
    }

    #[test]
    fn dash_and_colon_ranges() {
        assert_eq!(ex("node01-node03"), names("node01 node02 node03"));
        assert_eq!(ex("node1:node3"), names("node1 node2 node3"));
        assert_eq!(ex("node001-node200").len(), 200);
        assert_eq!(ex("node001-node200")[199], "node200");
        assert_eq!(ex("n1x-n3x"), names("n1x n2x n3x"));
    }

    #[test]
    fn a_known_node_with_a_dash_is_not_a_range() {
        assert_eq!(ex("rack1-n1"), names("rack1-n1"));
        // Different prefixes: not a range, just a (new) name.
        assert_eq!(expand("a1-b2", &NoUniverse).unwrap(), names("a1-b2"));
    }

    #[test]
    fn increment() {
        assert_eq!(ex("node10+3"), names("node10 node11 node12 node13"));
        assert_eq!(ex("node10+5").len(), 6);
        assert_eq!(ex("n008+2"), names("n008 n009 n010"));
    }

    #[test]
    fn groups_all_and_exclusion() {
        assert_eq!(ex("compute"), names("cn1 cn2 cn3 cn4 cn5 cn6"));
        let all = ex("all");
        assert_eq!(all.len(), 13);
        assert_eq!(all[1], "cn2", "all is in natural order");
        assert_eq!(all[9], "cn10");
        let r = ex("all,-cn5");
        assert_eq!(r.len(), 12);
        assert!(!r.contains(&"cn5".to_string()));
        assert_eq!(ex("compute,-gpu"), names("cn1 cn2 cn3 cn4"));
        assert_eq!(ex("compute,-cn[2-6]"), names("cn1"));
        assert_eq!(ex("group1-group3"), names("cn1 cn2 cn3"));
    }

    #[test]
    fn exclusion_applies_to_what_came_before() {
        assert_eq!(ex("-cn1,cn1"), names("cn1"));
    }

    #[test]
    fn intersection() {
        assert_eq!(ex("compute@gpu"), names("cn5 cn6"));
        assert_eq!(ex("compute@gpu@cn[6-9]"), names("cn6"));
    }

    #[test]
    fn regular_expressions_match_whole_names() {
        assert_eq!(ex("/^cn1.*$/"), names("cn1 cn10 cn11 cn12"));
        assert_eq!(ex("/cn1[01]"), names("cn10 cn11"));
        assert_eq!(
            ex("/cn1{1,2}/"),
            names("cn1 cn11"),
            "commas inside {{}} belong to the regex"
        );
        assert_eq!(ex("all,-/cn.*/"), names("rack1-n1"));
    }

    #[test]
    fn bad_regex_is_a_clear_error() {
        let err = expand("/cn(/", &inv()).unwrap_err();
        assert!(matches!(err, Error::Regex { .. }), "{err}");
        assert!(err.to_string().contains("invalid regular expression"));
    }

    #[test]
    fn syntax_errors_name_the_token() {
        for bad in [
            "",
            " ",
            "a,,b",
            "node[1-",
            "node1-]",
            "node[]",
            "node[a-b]",
            "node[5-1]",
            "node5-node1",
            "x+3",
            "-",
            "/",
        ] {
            let err = expand(bad, &inv()).expect_err(bad);
            assert!(!err.to_string().is_empty(), "{bad}");
        }
        let err = expand("node[5-1]", &inv()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"node[5-1]\": range \"5-1\" goes down; write the smaller number first"
        );
    }

    #[test]
    fn a_million_names_is_refused_before_building_them() {
        let err = expand("node[1-1000000]", &inv()).unwrap_err();
        assert_eq!(
            err,
            Error::TooLarge {
                limit: DEFAULT_LIMIT,
                token: "node[1-1000000]".into()
            }
        );
        // Also for products, increments and dash ranges, and huge numbers.
        assert!(matches!(
            expand("r[1-1000]n[1-1000]", &inv()),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            expand("node1+999999999", &inv()),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            expand("node1-node999999999", &inv()),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            expand("r[1-999999999999]n[1-999999999999]x[1-99999999999]", &inv()),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn the_limit_applies_to_the_sum_of_items() {
        let err = expand_with_limit("a[1-6],b[1-6]", &NoUniverse, 10).unwrap_err();
        assert!(matches!(err, Error::TooLarge { limit: 10, .. }));
        assert_eq!(
            expand_with_limit("a[1-5],b[1-5]", &NoUniverse, 10)
                .unwrap()
                .len(),
            10
        );
        // The limit is exactly reachable.
        assert_eq!(
            expand("n[1-100000]", &NoUniverse).unwrap().len(),
            DEFAULT_LIMIT
        );
    }

    #[test]
    fn brackets_whose_product_wraps_u128_are_too_large() {
        // Each bracket holds exactly 2^64 numbers; their product is 2^128, which wrapped to 0 in
        // u128 and let the expansion past the limit (then it allocated until the process died).
        let bracket = format!(
            "[{}0-446744073709551615]",
            "0-999999999999999999,".repeat(18)
        );
        let bomb = format!("a{bracket}b{bracket}");
        assert!(
            matches!(expand(&bomb, &inv()), Err(Error::TooLarge { .. })),
            "{bomb}"
        );
        let triple = format!("a{bracket}b{bracket}c{bracket}");
        assert!(matches!(
            expand(&triple, &inv()),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn exclusions_count_towards_the_work_budget() {
        // Adding and removing the same range over and over keeps the result empty but used to
        // cost 80 ms and 2.4 MB per pair, up to the input limit.
        let pair = "n[1-99999],-n[1-99999],";
        let expr = pair.repeat(10);
        let err = expand(expr.trim_end_matches(','), &inv()).unwrap_err();
        assert!(matches!(err, Error::TooMuchWork { .. }), "{err}");
        assert!(err.to_string().contains("simplify"), "{err}");
        // Within the budget the same shapes work.
        assert!(expand("n[1-99999],-n[1-99999]", &inv()).unwrap().is_empty());
        assert_eq!(
            expand("all,-cn1,all,-cn2", &inv()).unwrap().len(),
            inv().nodes.len() - 1
        );
    }

    #[test]
    fn groups_regexes_and_intersections_are_charged() {
        // `all` has 13 names: with a limit of 13 (a budget of 52) two passes fit, four do not.
        let limit = 13;
        assert!(expand_with_limit("all,-all", &inv(), limit).is_ok());
        for expr in [
            "all,-all,all,-all",
            "/cn.*/,-/cn.*/,/cn.*/,-/cn.*/",
            "compute@gpu,-compute@gpu,compute@gpu,-compute@gpu,compute@gpu,-compute@gpu",
        ] {
            let err = expand_with_limit(expr, &inv(), limit).unwrap_err();
            assert!(matches!(err, Error::TooMuchWork { .. }), "{expr}: {err}");
        }
    }

    #[test]
    fn every_item_costs_something() {
        // 50,000 one-letter items fit the input cap; with a small limit they exhaust the budget.
        let expr = "a,-a,".repeat(10_000);
        let err = expand_with_limit(expr.trim_end_matches(','), &NoUniverse, 100).unwrap_err();
        assert!(
            matches!(err, Error::TooMuchWork { budget: 400, .. }),
            "{err}"
        );
    }

    #[test]
    fn huge_input_is_refused() {
        let long = "a,".repeat(MAX_INPUT_LEN);
        assert_eq!(expand(&long, &inv()), Err(Error::InputTooLong));
        let just_over = "a".repeat(MAX_INPUT_LEN + 1);
        assert_eq!(expand(&just_over, &inv()), Err(Error::InputTooLong));
    }

    #[test]
    fn without_a_universe_groups_and_all_are_empty() {
        assert!(expand("all", &NoUniverse).unwrap().is_empty());
        assert_eq!(expand("compute", &NoUniverse).unwrap(), names("compute"));
    }

    #[test]
    fn natural_order() {
        let mut v = names("n10 n2 n1 n02 a b10 b9");
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, names("a b9 b10 n1 n2 n02 n10"));
    }
}
